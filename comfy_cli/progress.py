"""How far one prompt is, node by node: a value its tracker Prompt holds. Pure.

Theory of operation
-------------------
The tracker decides a prompt's phase (waiting, running, its end); this is the bookkeeping of
its nodes while it runs: which came from the cache, which the server really ran, which are
done, the one running now and its steps, when each ran, and the one "how far" figure. The
tracker hands it each node's news with the event's time and tells it when the prompt ended;
it reads no clock and knows nothing of phases.

How far a prompt is (`fill`, 0..1) is the one figure bars, lines and --events show: nodes done
(cached ones included) plus the running node's step fraction, over the prompt's nodes (`share`).
It only moves forward (a node that starts its steps again, a `progress_state` that marks the
running node finished before its last step, never pull it back), is 1 only on success, and stays
where it was on any other end.

Per-node timings (`spans`) are the client's view: a node starts when its `executing` (or its
first `progress`) is received and is done when the next node's is, its `executed` or a
`progress_state` saying it finished, or the prompt's end, whichever comes first. A cached node
takes no time. Nodes known only from /history (no messages seen) have no span.
"""

import math

ALMOST = 0.99  # the most an unfinished prompt's fill reaches: 100% means it succeeded


def step_share(step):
    """(value, max) of a node's steps as a fraction 0..1, or None when it cannot be one (max <= 0,
    not a number, infinite)."""
    try:
        value, top = float(step[0]), float(step[1])
    except (OverflowError, TypeError, ValueError, IndexError):
        return None
    if not (top > 0 and math.isfinite(top) and math.isfinite(value)):
        return None
    return min(max(value / top, 0.0), 1.0)


def share(done, total, running_share=None):
    """How far a prompt is: `done` of its `total` nodes, plus the running node's step fraction
    (None: no steps known), below 1 (ALMOST at most) until it has ended."""
    if total <= 0:
        return 0.0
    return min(ALMOST, (done + (running_share or 0.0)) / total)


class Progress:
    """One prompt's nodes as the client saw them (see the module doc). Its fields are read by
    the view, --events and the report; only its tracker Prompt calls its methods."""

    __slots__ = ("workflow", "cached", "ran", "done", "spans", "node", "node_at", "step", "fill", "_nodes")

    def __init__(self, workflow):
        self.workflow = workflow  # (its graph is read when needed: a plan builds it late)
        self.cached = set()
        self.ran = set()  # nodes the server really executed
        self.done = set()  # nodes finished, cached ones included
        # node id -> [first seen running, seen done or None], in the order they started; the
        # times are events' `at` (when the client received them): the client's view of the run.
        self.spans = {}
        self.node = None  # node running now
        self.node_at = None  # when it started (the `executing` event's time)
        self.step = None  # (value, max) of that node's progress
        self.fill = 0.0  # how far the whole prompt is, 0..1: only moves forward
        self._nodes = None  # the graph's node ids, once read (the graph never changes after)

    # ---- queries -------------------------------------------------------------------------
    def _graph_nodes(self):
        nodes = self._nodes
        if nodes is None:
            nodes = self._nodes = frozenset(self.workflow.graph)
        return nodes

    @property
    def total(self):
        return len(self._graph_nodes())

    @property
    def done_count(self):
        return len(self.done & self._graph_nodes())

    # ---- a node's news (each returns True if anything visible changed) ---------------------
    def from_cache(self, e):
        """`execution_cached`: these nodes are done without running."""
        new = set(e.nodes) - self.cached
        self.cached |= new
        self.done |= new
        for node in e.nodes:
            if node in new:
                self.spans.setdefault(node, [e.at, e.at])
        return bool(new)

    def executing(self, e):
        """`executing {node}`: that node runs now."""
        node = e.display_node or e.node
        if node == self.node:
            return False
        self._switch(node, e.at)
        self.step = None
        return True

    def stepped(self, e):
        """`progress`: a node's steps (its first one may be the first news that it runs)."""
        node = e.node or self.node
        if node != self.node and node is not None:
            self._switch(node, e.at)
        step = (e.value, e.max)
        if step == self.step:
            return False
        self.step = step
        return True

    def finished(self, e):
        """`progress_state`: the nodes it says finished are done."""
        before = len(self.done)
        for node in e.finished:
            self._done(node, e.at)
        return len(self.done) != before

    def executed(self, node, at):
        """`executed`: the node is done (the prompt had not ended yet)."""
        self._done(node, at)

    def advance(self):
        """After a change: `fill` follows how far the prompt is now, from its nodes and steps
        alone, and never goes back. This runs once per message of a batch: the graph's nodes
        are read once, and the step share only while a node has steps."""
        nodes = self._nodes or self._graph_nodes()
        done, node = self.done, self.node
        running = None
        if node is not None and self.step is not None and node in nodes and node not in done:
            running = step_share(self.step)
        fill = share(len(done & nodes), len(nodes), running)
        if fill > self.fill:
            self.fill = fill

    # ---- the prompt's end -------------------------------------------------------------------
    def succeeded(self, outputs):
        """It succeeded: every node is done. With no node seen running (the picture came from
        /history, which lists only the cached nodes and the outputs), every node the server did
        not take from its cache ran."""
        graph = self.workflow.graph.keys()
        if not self.ran - outputs.keys():
            self.ran |= graph - self.cached
        self.done |= graph

    def stop(self, at, success, told):
        """The prompt ended at `at`: `told`, the server said so (the running node ended then;
        given up on, when it ended is not known). Only a success fills it."""
        if self.node is not None and success:
            self.done.add(self.node)
        if self.node is not None and told:
            self._close(self.node, at)
        if success:
            self.fill = 1.0  # any other end keeps the fill where it was
        self.node = None
        self.node_at = None
        self.step = None

    def _switch(self, node, at):
        """`node` runs now: the one before it is done."""
        if self.node is not None:
            self.done.add(self.node)
            self._close(self.node, at)
        self.node = node
        self.node_at = at
        self.ran.add(node)
        span = self.spans.get(node)
        if span is None:
            self.spans[node] = [at, None]
        else:
            span[1] = None  # (runs again: its span reaches to its last end)

    def _done(self, node, at):
        self.done.add(node)
        self._close(node, at)
        if node not in self.cached:
            self.ran.add(node)

    def _close(self, node, at):
        span = self.spans.get(node)
        if span is not None and span[1] is None:
            span[1] = at
