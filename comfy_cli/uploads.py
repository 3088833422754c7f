"""Local files a prompt names, uploaded to a server by its submitter just before the first
prompt there that needs them.

So the main loop never waits on an upload, a file is sent once per server (`--input` folders and
`@` columns can name thousands), and a server never given such a prompt is never sent the file.
The graph sent names the server's copy: a server may rename a file it already holds.
"""

import time
from typing import NamedTuple

from comfy_cli import batch


class Uploaded(NamedTuple):
    """A worker's news for the view: `path` is on the server as `name`."""

    at: float
    path: str
    name: str


class Uploads:
    """One server's uploads; only that server's submitter thread uses it."""

    def __init__(self, client, fixed, tell):
        self.client = client
        self.fixed = fixed  # --input assignments of one file (batch.Assignment)
        self.tell = tell  # puts an Uploaded on the run's queue
        self.names = {}  # local path -> its name on the server

    def graph(self, workflow):
        """The graph to send there; raises what Client.upload raises (the path is in `failed`)."""
        targets = batch.upload_targets(workflow, self.fixed)
        named = {(nid, name) for nid, name, _ in targets}
        targets += [t for t in getattr(workflow, "uploads", ()) if (t[0], t[1]) not in named]
        if not targets:
            return workflow.graph
        graph = dict(workflow.graph)
        copied = set()
        for nid, name, path in targets:
            if path not in self.names:
                self.failed = path
                self.names[path] = self.client.upload(path)
                self.tell(Uploaded(time.monotonic(), path, self.names[path]))
            if nid not in copied:
                copied.add(nid)
                graph[nid] = dict(graph[nid], inputs=dict(graph[nid].get("inputs", {})))
            graph[nid]["inputs"][name] = self.names[path]
        return graph

    failed = None  # the file whose upload raised
