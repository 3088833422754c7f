"""The names ComfyUI's page shows for node types, and the `_meta` it sends with each node.

The page titles a node that has no title of its own with the type's `display_name` from
/object_info; when the server gives none, with an English name built into the page. Those
names are data, in node_labels.tsv next to this file (where they come from is noted there).
"""

import os
import re

_LABELS = None
# What the page accepts in a node's properties before sending them (invalid ones are dropped):
# a registry id, a "user/repo" GitHub id, a semantic version or a git commit hash.
_PACK_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?$")
_GITHUB_USER = re.compile(r"^(?!-)(?!.*--)[A-Za-z0-9-]{1,39}(?<!-)$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[\da-z-]+(\.[\da-z-]+)*)?(\+[\da-z-]+(\.[\da-z-]+)*)?$")
_COMMIT = re.compile(r"^[0-9a-fA-F]{4,40}$")


def builtin_label(kind):
    """The page's own English name for a node type, or None."""
    global _LABELS
    if _LABELS is None:
        _LABELS = _read(os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_labels.tsv"))
    return _LABELS.get(kind)


def _read(path):
    labels = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            kind, _tab, label = line.rstrip("\n").partition("\t")
            labels[kind] = label
    return labels


def title(node, info):
    """The node's own title, else the type's display name, else the page's name, else the type."""
    kind = node["type"]
    own = node.get("title")
    if isinstance(own, str) and own and own != kind:  # a title equal to the type is the old default
        return own
    return info.get("display_name") or builtin_label(kind) or kind


def meta(node, info):
    """`_meta` as the page sends it: the title, then the node pack's id and version when valid."""
    out = {"title": title(node, info)}
    props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
    cnr_id, aux_id, ver = props.get("cnr_id"), props.get("aux_id"), props.get("ver")
    if isinstance(cnr_id, str) and _PACK_ID.match(cnr_id):
        out["cnr_id"] = cnr_id
    if isinstance(aux_id, str) and _valid_aux(aux_id):
        out["aux_id"] = aux_id
    if isinstance(ver, str):
        ver = ver[1:] if ver.startswith("v") else ver
        if ver == "unknown" or _SEMVER.match(ver) or _COMMIT.match(ver):
            out["ver"] = ver
    return out


def _valid_aux(aux_id):
    user, slash, repo = aux_id.partition("/")
    return bool(slash) and "/" not in repo and bool(_GITHUB_USER.match(user)) and bool(_PACK_ID.match(repo))
