"""Prompt validation with the real server's error shapes (PROTOCOL 2.1).

Rules worth knowing, all mirrored from ComfyUI 0.3.64:
* unknown/missing class_type stops at the first offending node (invalid_prompt);
* only output nodes are validated, each pulling in its ancestors;
* a node is listed in node_errors only for errors of its own, never because an
  ancestor failed; every node with errors found so far is charged to each
  output that fails (even one that does not depend on it);
* widget values are converted in place (int("5") -> 5), so the queued and
  history copies of the graph hold the converted values;
* top-level ``details`` only joins the failing *output* nodes' own errors.
"""

import traceback
from typing import Dict, List, Optional, Tuple

from .nodes import NODES

CONVERT = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def _error(kind, message, details, **extra):
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _top(kind, message, details=""):
    return _error(kind, message, details)


class _Validator:
    def __init__(self, prompt: dict):
        self.prompt = prompt
        self.validated: Dict[str, Tuple[bool, list]] = {}
        self.visiting: List[str] = []

    def node(self, nid: str) -> Tuple[bool, list]:
        if nid in self.validated:
            return self.validated[nid]
        if nid in self.visiting:
            return self._cycle(nid)
        node = self.prompt[nid]
        inputs = node["inputs"]  # KeyError here is reported like the real server's
        if not isinstance(inputs, dict):
            raise TypeError(f"inputs of node {nid} must be an object")
        nodedef = NODES[node["class_type"]]
        errors, valid = [], True
        for name in nodedef.declared_inputs():
            kind, opts, section = nodedef.input_spec(name)
            config = [kind, opts]
            if name not in inputs:
                if section == "required":
                    errors.append(_error("required_input_missing", "Required input is missing",
                                         name, input_name=name))
                continue
            val = inputs[name]
            if isinstance(val, list):
                ok = self._link(nid, name, val, kind, config, errors)
                valid = valid and ok
                continue
            if isinstance(val, dict) and "__value__" in val:
                val = inputs[name] = val["__value__"]
            if isinstance(kind, str) and kind in CONVERT:
                try:
                    val = inputs[name] = CONVERT[kind](val)
                except Exception as ex:
                    errors.append(_error(
                        "invalid_input_type", f"Failed to convert an input value to a {kind} value",
                        f"{name}, {val}, {ex}", input_name=name, input_config=config,
                        received_value=val, exception_message=str(ex)))
                    continue
            if "min" in opts and val < opts["min"]:
                errors.append(_error("value_smaller_than_min",
                                     f"Value {val} smaller than min of {opts['min']}", name,
                                     input_name=name, input_config=config, received_value=val))
                continue
            if "max" in opts and val > opts["max"]:
                errors.append(_error("value_bigger_than_max",
                                     f"Value {val} bigger than max of {opts['max']}", name,
                                     input_name=name, input_config=config, received_value=val))
                continue
        result = (valid and not errors, errors)
        if nid in self.validated:  # a cycle through us was recorded meanwhile
            old = self.validated[nid]
            result = (False, old[1] + [e for e in errors if e not in old[1]])
        self.validated[nid] = result
        return result

    def _link(self, nid, name, val, kind, config, errors) -> bool:
        """Check one linked input; returns False when an ancestor is invalid."""
        def bad(message):
            errors.append(_error("bad_linked_input", message, name, input_name=name,
                                 input_config=config, received_value=val))
            return True
        if len(val) != 2:
            return bad("Bad linked input, must be a length-2 list of [node_id, slot_index]")
        src, slot = val
        if not isinstance(src, str) or src not in self.prompt:
            return bad(f"Bad linked input, node {src!r} does not exist")
        src_def = NODES[self.prompt[src]["class_type"]]
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(src_def.returns):
            return bad(f"Bad linked input, node {src} has no output {slot!r}")
        received = src_def.returns[slot]
        if received != kind and "*" not in (received, kind):
            errors.append(_error(
                "return_type_mismatch", "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({kind})",
                input_name=name, input_config=config, received_type=received, linked_node=val))
            return True
        self.visiting.append(nid)
        try:
            ok, _ = self.node(src)
        except Exception as ex:
            self.validated[src] = (False, [_error(
                "exception_during_inner_validation", "Exception when validating inner node",
                str(ex), input_name=name, input_config=config, exception_message=str(ex),
                exception_type=type(ex).__name__, traceback=traceback.format_tb(ex.__traceback__),
                linked_node=val)])
            return False
        finally:
            self.visiting.pop()
        return ok

    def _cycle(self, nid):
        path = self.visiting[self.visiting.index(nid):] + [nid]
        members = list(dict.fromkeys(path))
        text = " -> ".join(f"{n} ({self.prompt[n]['class_type']})" for n in path)
        for n in members:
            self.validated[n] = (False, [_error("dependency_cycle", "Dependency cycle detected",
                                                text, node_id=n, cycle_nodes=members)])
        return self.validated[nid]


def validate_prompt(prompt: dict, targets: Optional[list] = None, lacks=()):
    """Returns (ok, error, good_outputs, node_errors) like the real validate_prompt. `lacks`:
    node types this server plays as not installed."""
    outputs = []
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return False, _top("invalid_prompt",
                               "Cannot execute because a node is missing the class_type property.",
                               f"Node ID '#{nid}'"), [], {}
        class_type = node["class_type"]
        nodedef = NODES.get(class_type) if isinstance(class_type, str) and class_type not in lacks else None
        if nodedef is None:
            return False, _top("invalid_prompt",
                               f"Cannot execute because node {class_type} does not exist.",
                               f"Node ID '#{nid}'"), [], {}
        if nodedef.output_node and (targets is None or nid in targets):
            outputs.append(nid)
    if not outputs:
        return False, _top("prompt_no_outputs", "Prompt has no outputs"), [], {}

    v = _Validator(prompt)
    good, failed, node_errors = [], [], {}
    for out in outputs:
        try:
            ok, reasons = v.node(out)
        except Exception as ex:
            ok, reasons = False, [_error(
                "exception_during_validation", "Exception when validating node", str(ex),
                exception_type=type(ex).__name__, traceback=traceback.format_tb(ex.__traceback__))]
            v.validated[out] = (False, reasons)
        if ok:
            good.append(out)
            continue
        failed.append(reasons)
        for nid, (nok, nreasons) in v.validated.items():
            if not nok and nreasons:
                entry = node_errors.setdefault(nid, {"errors": nreasons, "dependent_outputs": [],
                                                     "class_type": prompt[nid]["class_type"]})
                entry["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for reasons in failed for e in reasons)
        return False, _top("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                           details), [], node_errors
    return True, None, good, node_errors
