"""A UI node's `widgets_values` (a bare list) matched to the inputs they are for.

Values go, in order, to the node type's widget inputs in `/object_info` order (`input_order`:
required, then optional): INT, FLOAT, STRING, BOOLEAN and combos, unless marked `forceInput`.
Frontend-only widgets take a slot and are skipped: the `control_after_generate` value ("fixed",
"randomize", ...) after an input that declares it, and the upload button ("image", ...) after an
`image_upload`-style input. Values the file lacks get the input's default (a combo's first
choice). Values go by position whatever their type, as the page does: a file saved for another
version of a node gets its values shifted (the server's validation or `--dry-run` says so), and
values beyond the last widget are dropped (the page keeps the first ones too).

Some widgets exist only in the page but are sent all the same: `PAGE_WIDGETS`, and the refresh
button of a combo whose choices the page asks the server for (`"refresh": "refresh"`). A value
that is a list is sent wrapped, `{"__value__": [...]}`, so that it cannot pass for a link.
"""

from dataclasses import dataclass

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload", "animated_image_upload")
UPLOAD_VALUES = frozenset({"image", "video", "audio", "file", "refresh"})
# Widgets the page adds beyond the declared inputs (a preview text, a refresh button...) leave a
# value or two at the end, silently dropped; more than that is worth a note.
EXTRA_WIDGETS = 2
# Widgets the page's own extensions add to a node type as a required input, and send: the 3D
# viewer of these nodes (its value is restored from the file like any widget, "" by default).
PAGE_WIDGETS = {"SaveGLB": "image", "Preview3D": "image"}


@dataclass
class Values:
    inputs: dict  # input name -> value
    dropped: int = 0  # values beyond the node's widgets, beyond the usual page extras
    slots: int = 0  # the widget slots the values were matched to


def widget_inputs(info, kind=None):
    """[(name, (type, opts))] of a node type's widget inputs, in the order values are saved."""
    spec = info.get("input") if isinstance(info.get("input"), dict) else {}
    order = info.get("input_order") if isinstance(info.get("input_order"), dict) else {}
    out = []
    for section in ("required", "optional"):
        declared = spec.get(section) if isinstance(spec.get(section), dict) else {}
        names = order.get(section) if isinstance(order.get(section), list) else list(declared)
        for name in names:
            entry = declared.get(name)
            if not isinstance(entry, list) or not entry:
                continue
            typ = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput"):
                out.append((name, (typ, opts)))
        if section == "required" and kind in PAGE_WIDGETS and PAGE_WIDGETS[kind] not in declared:
            out.append((PAGE_WIDGETS[kind], ("STRING", {"default": ""})))
    return out


def sent(value):
    """A widget value as the page sends it."""
    return {"__value__": value} if isinstance(value, list) else value


def by_name(values, info, kind):
    """Values saved as an object (some nodes do): each widget input by its name, else its default."""
    out = {}
    for name, (typ, opts) in widget_inputs(info, kind):
        if name in values:
            out[name] = values[name]
        elif _has_default(typ, opts):
            out[name] = _default(typ, opts)
    return Values(_with_buttons(out, info, kind))


def by_position(values, info, kind):
    """Values saved as a list, matched by position."""
    widgets = widget_inputs(info, kind)
    out, pos = {}, 0
    for name, (typ, opts) in widgets:
        if pos >= len(values):
            if _has_default(typ, opts):
                out[name] = _default(typ, opts)
            continue
        out[name] = values[pos]
        pos += 1
        if opts.get("control_after_generate") and pos < len(values) and _is_control(values[pos]):
            pos += 1
        remote = opts.get("remote") if isinstance(opts.get("remote"), dict) else {}
        if remote and pos < len(values) and isinstance(values[pos], bool):
            pos += 1  # its auto-refresh switch
        if remote.get("refresh_button") and pos < len(values) and values[pos] == "refresh":
            pos += 1
        if any(opts.get(flag) for flag in UPLOAD_FLAGS):
            while pos < len(values) and _is_upload_extra(values[pos], opts):
                pos += 1
    # With no widget inputs nothing can be misassigned: the values are the page's own.
    beyond = len(values) - pos if widgets else 0
    return Values(_with_buttons(out, info, kind), dropped=beyond if beyond > EXTRA_WIDGETS else 0, slots=pos)


def _with_buttons(out, info, kind):
    remote = [opts.get("remote") for _n, (_t, opts) in widget_inputs(info, kind)]
    if "refresh" not in out and any(isinstance(r, dict) and r.get("refresh_button") for r in remote):
        out["refresh"] = "refresh"  # the button is a widget like any other to the page
    return out


def _choices(typ, opts):
    if isinstance(typ, list):
        return typ
    options = opts.get("options")
    return options if typ == "COMBO" and isinstance(options, list) else None


def _has_default(typ, opts):
    return "default" in opts or bool(_choices(typ, opts))


def _default(typ, opts):
    if "default" in opts:
        return opts["default"]
    return _choices(typ, opts)[0]


def _is_control(value):
    # Older files saved the control as a boolean ("randomize" on or off).
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _is_upload_extra(value, opts):
    # The upload button's name, and for a server-listed combo its refresh button and switch.
    if isinstance(value, str):
        return value in UPLOAD_VALUES
    return isinstance(value, bool) and bool(opts.get("remote"))
