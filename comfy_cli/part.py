"""What every part of a supervisor shares: the board, the policy, the start, and the others."""


class Part:
    def __init__(self, board, policy, now):
        self.board = board  # the tracker's prompts of this server
        self.policy = policy
        self.started = now
        self.p = None  # the other parts, by name (set once by the supervisor)

    def link(self, parts):
        self.p = parts


def earliest(*times):
    """The earliest of some monotonic times, None ones left out (None if all are): how every
    part, the supervisor and the dispatcher answer `next_wakeup`, which runs at every turn of
    the loop (so a plain loop, not lists and min)."""
    best = None
    for t in times:
        if t is not None and (best is None or t < best):
            best = t
    return best
