"""Subgraph definitions as the page reads them, and legacy group nodes as subgraphs.

A file's `definitions.subgraphs` (with any definitions nested in them hoisted after their
parent) is read in order; a definition whose id was seen already is ignored, as is a node whose
id its subgraph already has. Inner node ids that collide with the top level's or with an earlier
definition's are renumbered as the page does when it loads the file (its setting
`Comfy.Graph.DeduplicateSubgraphNodeIds`, on by default): the next number after the highest id
seen so far (the file's `last_node_id` at least) that no node has. The links inside follow, and
so do the API ids (`"<instance id>:<inner id>"`).
"""

import copy

INPUT_NODE, OUTPUT_NODE = -10, -20  # a subgraph's border nodes


def definitions(doc, fail):
    """{subgraph id: definition} in file order, colliding inner ids renumbered (on copies)."""
    found = doc.get("definitions")
    if found is not None and not isinstance(found, dict):
        fail("'definitions' is not an object")
    flat = []
    _hoist((found or {}).get("subgraphs"), flat, fail, depth=0)
    out = {}
    for sg in flat:
        if sg["id"] not in out:
            out[sg["id"]] = sg
    _renumber(list(out.values()), doc)
    return out


def _hoist(subgraphs, flat, fail, depth):
    if subgraphs is None:
        return
    if not isinstance(subgraphs, list):
        fail("'definitions.subgraphs' is not a list")
    if depth > 32:
        fail("subgraph definitions nested more than 32 deep")
    for sg in subgraphs:
        if not isinstance(sg, dict) or not isinstance(sg.get("id"), str):
            fail("a subgraph definition without an id")
        inner = sg.get("definitions")
        sg = dict(sg, nodes=_first_of_each_id(sg.get("nodes")))
        flat.append(sg)
        if isinstance(inner, dict):
            _hoist(inner.get("subgraphs"), flat, fail, depth + 1)


def _first_of_each_id(nodes):
    if not isinstance(nodes, list):
        return nodes  # refused later, with the subgraph's name
    seen, out = set(), []
    for node in nodes:
        key = str(node.get("id")) if isinstance(node, dict) else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        out.append(node)
    return out


def _renumber(subgraphs, doc):
    taken = {str(n.get("id")) for n in doc.get("nodes") or [] if isinstance(n, dict)}
    numbers = {int(k) for k in taken if _numeric(k)}
    state = doc.get("state") if isinstance(doc.get("state"), dict) else {}
    last = state.get("lastNodeId", doc.get("last_node_id"))
    last = last if isinstance(last, int) and not isinstance(last, bool) and last >= 0 else 0
    for sg in subgraphs:
        if not isinstance(sg.get("nodes"), list):
            continue
        moved = {}
        for node in sg["nodes"]:
            if not isinstance(node, dict) or "id" not in node:
                continue
            key = str(node["id"])
            if key in taken:
                last += 1
                while last in numbers:
                    last += 1
                moved[key] = last
                numbers.add(last)
                taken.add(str(last))
            else:
                taken.add(key)
                if _numeric(key):
                    numbers.add(int(key))
                    last = max(last, int(key))
        if moved:
            _move(sg, moved)


def _move(sg, moved):
    """Give the subgraph's nodes their new ids, and its links their new ends (on copies)."""
    sg["nodes"] = [dict(n, id=moved[str(n["id"])]) if isinstance(n, dict) and str(n.get("id")) in moved else n
                   for n in sg["nodes"]]
    links = []
    for link in sg.get("links") or []:
        if isinstance(link, dict):
            link = dict(link)
            for end in ("origin_id", "target_id"):
                if str(link.get(end)) in moved:
                    link[end] = moved[str(link[end])]
        elif isinstance(link, list) and len(link) >= 4:
            link = copy.copy(link)
            for i in (1, 3):
                if str(link[i]) in moved:
                    link[i] = moved[str(link[i])]
        links.append(link)
    sg["links"] = links


def _numeric(key):
    return key.isdigit() and str(int(key)) == key


def group_scope(group, node, api_id, name, fail):
    """A legacy group node's inside: (inner nodes by index, links, the instance's outputs).

    The instance's inputs are the inner inputs not linked inside, in node order (routed through
    the border node); its outputs the inner outputs in node order."""
    if not isinstance(group, dict) or not isinstance(group.get("nodes"), list):
        fail(f"node {api_id}: group node {name!r} has no node list")
    inner = {}
    for i, n in enumerate(group["nodes"]):
        if not isinstance(n, dict) or not isinstance(n.get("type"), str):
            fail(f"node {api_id}: group node {name!r} has a node without a type")
        inner[n.get("index", i)] = dict(n, id=n.get("index", i), inputs=[dict(x) for x in n.get("inputs") or []],
                                        title=n.get("title"))
    for n in inner.values():
        for entry in n["inputs"]:
            entry["link"] = None  # ids from the graph the group was made in: meaningless here
    links, linked_to = {}, set()
    for k, link in enumerate(group.get("links") or []):
        if not isinstance(link, list) or len(link) < 4 or link[2] not in inner:
            fail(f"node {api_id}: group node {name!r} has a malformed link")
        key = f"group-link-{k}"  # never clashes with the numeric ids of a file
        links[key] = (link[0], link[1], link[2], link[3], link[5] if len(link) > 5 else None)
        linked_to.add((link[2], link[3]))
        if 0 <= link[3] < len(inner[link[2]]["inputs"]):
            inner[link[2]]["inputs"][link[3]]["link"] = key
    border_in = [(idx, slot) for idx, n in inner.items() for slot, _x in enumerate(n["inputs"])
                 if (idx, slot) not in linked_to]
    border_out = [(idx, slot) for idx, n in inner.items() for slot, _x in enumerate(n.get("outputs") or [])]
    for k, (idx, slot) in enumerate(border_in):
        links[f"group-in-{k}"] = (INPUT_NODE, k, idx, slot, None)
        inner[idx]["inputs"][slot]["link"] = f"group-in-{k}"
    _share_values(node.get("widgets_values"), inner)
    return inner, links, border_out


def _share_values(values, inner):
    """The instance holds every inner node's widget values, in order, when it has them all."""
    if isinstance(values, list) and values:
        counts = [len(n.get("widgets_values") or []) for n in inner.values()]
        if sum(counts) == len(values):
            pos = 0
            for n, c in zip(inner.values(), counts):
                n["widgets_values"] = values[pos:pos + c]
                pos += c
