"""What every part of a supervisor shares: the board, the policy, the start, and the others."""


class Part:
    def __init__(self, board, policy, now):
        self.board = board  # the tracker's prompts of this server
        self.policy = policy
        self.started = now
        self.p = None  # the other parts, by name (set once by the supervisor)

    def link(self, parts):
        self.p = parts
