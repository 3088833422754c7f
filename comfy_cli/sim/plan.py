"""Graph analysis for one prompt: cache keys and the order nodes run in."""

import json
from typing import Dict, Optional

from .nodes import NODES
from .validation import is_link


def signatures(prompt: dict) -> Dict[str, tuple]:
    """Cache key of every node: its class and inputs, with each link replaced
    by the upstream node's own key, so equal sub-graphs share cache entries
    whatever their node ids (like ComfyUI's classic input-signature cache)."""
    memo: Dict[str, tuple] = {}

    def sig(nid, stack):
        if nid in memo:
            return memo[nid]
        if nid in stack:  # only reachable in graphs that were never validated
            return ("cycle", nid)
        stack.add(nid)
        node = prompt[nid] if isinstance(prompt[nid], dict) else {}
        inputs = node.get("inputs")
        parts = []
        for name in sorted(inputs) if isinstance(inputs, dict) else ():
            value = inputs[name]
            if is_link(value) and value[0] in prompt:
                parts.append((name, sig(value[0], stack), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True, default=repr)))
        stack.discard(nid)
        memo[nid] = (str(node.get("class_type")), tuple(parts))
        return memo[nid]

    for nid in prompt:
        sig(nid, set())
    return memo


class Plan:
    """Which nodes still have to run and which is next.  Output nodes are
    staged with their uncached ancestors; among ready nodes, output nodes and
    nodes feeding them go first, as in ComfyUI's execution list."""

    def __init__(self, prompt, outputs, is_cached):
        self.prompt = prompt
        self.waiting: Dict[str, dict] = {}   # node -> {upstream node still to run: None}
        self.feeds: Dict[str, dict] = {}     # node -> {downstream node: None}
        for out in outputs:
            self._stage(out, is_cached)

    def _stage(self, start, is_cached):
        stack, links = [start], []
        while stack:
            nid = stack.pop()
            if nid in self.waiting:
                continue
            self.waiting[nid] = {}
            self.feeds.setdefault(nid, {})
            for value in self.prompt[nid]["inputs"].values():
                if is_link(value) and value[0] in self.prompt:
                    if not is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], nid))
        for src, dst in links:
            if not is_cached(src):
                self.waiting[dst][src] = None
                self.feeds.setdefault(src, {})[dst] = None

    def _is_output(self, nid):
        return NODES[self.prompt[nid]["class_type"]].output_node

    def pick(self) -> Optional[str]:
        ready = [n for n, ups in self.waiting.items() if not ups]
        for n in ready:
            if self._is_output(n):
                return n
        for n in ready:
            if any(self._is_output(d) for d in self.feeds[n]):
                return n
        for n in ready:
            if any(self._is_output(d2) for d in self.feeds[n] for d2 in self.feeds.get(d, ())):
                return n
        return ready[0] if ready else None

    def done(self, nid):
        del self.waiting[nid]
        for dst in self.feeds.get(nid, ()):
            if dst in self.waiting:
                self.waiting[dst].pop(nid, None)
