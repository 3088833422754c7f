"""--report FILE.html: one self-contained page (CSS and script inline, nothing fetched from the
network) made from manifest lines (manifest.record), so shards' manifests can be merged into one.

`render(records, meta)` is pure: plain dicts in, text out. Every string that comes from a server
or a workflow is escaped; links are only relative paths (quoted, so never a `javascript:` URL)
or http(s) URLs, and a Content-Security-Policy lets only the page's own script run, so even a
missed escape could not run an injected one.

The page: a summary (counts by status, exit code, wall time, servers), the outputs laid out in
a grid when the batch varies one to three inputs, otherwise a gallery, and a table of every
prompt. The grid follows the batch's order (the last input varies fastest): columns are the
last varying input, rows the one before, and a third before them gives one grid per value; the
workflow file counts as an input, the first, when several were given (see `grid_axes` for
when there is no grid).
"""

import base64
import hashlib
import json
from html import escape
from urllib.parse import quote

from comfy_cli import htmldiff
from comfy_cli.report import SUMMARY_WORDS

IMAGE = {"png", "jpg", "jpeg", "webp", "gif", "bmp", "avif", "apng"}
VIDEO = {"mp4", "webm", "mov", "m4v", "mkv", "ogv"}
AUDIO = {"wav", "mp3", "flac", "ogg", "opus", "m4a", "aac"}
# What the page reads of a manifest line (the rest, e.g. `ui` and tracebacks, it never shows).
FIELDS = ("index", "prompt_id", "name", "workflow", "values", "status", "server", "message", "timings",
          "node_timings", "outputs", "expected")
MAX_TEXT = 300  # longer values are cut in cells (the whole text is in the cell's tooltip)
WORKFLOW = "workflow"  # the pseudo-input a batch of several workflow files varies

CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1d1d1f;--mute:#6e6e73;--line:#d2d2d7;--card:#f5f5f7;
--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--bg:#161618;--fg:#f5f5f7;--mute:#a1a1a6;--line:#3a3a3c;
--card:#232326;--ok:#3fb950;--bad:#ff7b72;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0 auto;padding:1rem;max-width:1400px;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;overflow-wrap:break-word}
h1{font-size:1.4rem;margin:.2rem 0 .6rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}h3{font-size:1rem}
.mute{color:var(--mute)}.note{background:var(--card);border-left:4px solid var(--warn);padding:.5rem .8rem}
.chips{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0;padding:0;list-style:none}
.chip{background:var(--card);border:1px solid var(--line);border-radius:1rem;padding:.1rem .7rem}
.s-success{color:var(--ok)}.s-failed,.s-rejected,.s-error,.s-lost,.s-interrupted,.s-timeout{color:var(--bad)}
.s-cancelled,.s-detached,.s-pending{color:var(--warn)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0}
dl.facts dt{color:var(--mute)}dl.facts dd{margin:0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse}th,td{border:1px solid var(--line);padding:.3rem .5rem;vertical-align:top;
text-align:left}
table.grid td,table.grid th{min-width:8rem;max-width:22rem}
table.grid th.corner{font-weight:normal;color:var(--mute)}
figure{margin:0 0 .3rem}img.thumb{display:block;width:12rem;max-width:100%;height:auto;background:var(--card)}
.cell+.cell{margin-top:.5rem;padding-top:.5rem;border-top:1px dashed var(--line)}.cell .label{font-size:.85rem}
video,audio{max-width:100%}
.err{color:var(--bad);white-space:pre-wrap}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr));gap:.8rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:.4rem;padding:.5rem}
.card .label{font-size:.9rem;margin-top:.3rem}
.filters{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0}
.filters input,.filters select{font:inherit;padding:.2rem .4rem}
table.list{width:100%}table.list td.num{text-align:right;white-space:nowrap}table.list td.nowrap{white-space:nowrap}
td.err,td.values{word-break:break-word;min-width:10rem}
code{font-size:.9em}
@media (max-width:640px){body{padding:.6rem}
table.list thead{display:none}table.list,table.list tbody,table.list tr,table.list td{display:block;width:100%}
table.list tr{border:1px solid var(--line);border-radius:.4rem;margin:0 0 .6rem;padding:.3rem}
table.list td{border:0;padding:.15rem .3rem}table.list td.num{text-align:left}
table.list td:empty{display:none}table.list td.err,table.list td.values{min-width:0}
table.list td[data-label]::before{content:attr(data-label) ": ";color:var(--mute)}}
"""

SCRIPT = """
(function () {
  var text = document.getElementById("filter-text"), status = document.getElementById("filter-status");
  var rows = document.querySelectorAll("#prompts tbody tr"), shown = document.getElementById("filter-count");
  if (!text || !status) { return; }
  function apply() {
    var t = text.value.toLowerCase(), s = status.value, n = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (!s || r.getAttribute("data-status") === s) && (!t || r.textContent.toLowerCase().indexOf(t) >= 0);
      r.hidden = !ok;
      if (ok) { n++; }
    }
    shown.textContent = n + " of " + rows.length;
  }
  text.addEventListener("input", apply);
  status.addEventListener("change", apply);
  apply();
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = ("default-src 'none'; img-src 'self' file: data: http: https:; media-src 'self' file: data: http: https:; "
       f"style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'")


def _e(value):
    return escape(value if isinstance(value, str) else str(value), quote=True)


def latest(records):
    """The last line of each batch item (a retried item has one line per attempt)."""
    last = {}
    for r in records:
        key = r.get("index") if r.get("index") is not None else r.get("prompt_id")
        last[key] = r
    return sorted(last.values(), key=lambda r: (r.get("index") is None, r.get("index") or 0))


def render(records, meta):
    """The whole page. `records`: manifest lines (dicts). `meta`: {"title", "finished" (bool),
    "exit_code", "wall_s", "servers" [urls], "total" (prompts in the batch), "started", "updated"
    (text), "files" (the output folder as a relative link prefix, e.g. "out/"; None: use the
    servers' URLs), "refresh" (seconds, while running)}; missing keys are left out."""
    rows = latest(records)
    title = meta.get("title") or "comfy-cli report"
    body = [_header(title, meta), _summary(rows, meta), htmldiff.section(rows, meta)]
    axes, why_not = grid_axes(rows)
    if axes:
        body.append(_grids(rows, axes, meta))
    else:
        if why_not:
            body.append(f'<p class="note">{_e(why_not)}; the outputs are shown one by one and the table below '
                        f'lists every prompt.</p>')
        body.append(_gallery(rows, meta))
    body.append(_table(rows))
    refresh = meta.get("refresh")
    head_refresh = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh and not meta.get(
        "finished") else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"{head_refresh}<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def _header(title, meta):
    if meta.get("finished"):
        state = "Finished" + (f" {_e(meta['updated'])}" if meta.get("updated") else "") + "."
    else:
        state = ("Running: this page is rewritten every few seconds while the batch runs"
                 + (f" (last {_e(meta['updated'])})" if meta.get("updated") else "") + ".")
    return f'<header><h1>{_e(title)}</h1><p class="mute" id="state">{state}</p></header>'


def _summary(rows, meta):
    counts = {}
    for r in rows:
        counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    total = max(meta.get("total") or 0, len(rows))
    chips = [f'<li class="chip s-{_e(s)}" data-status="{_e(s)}">{counts[s]} {_e(word)}</li>'
             for s, word in SUMMARY_WORDS if counts.get(s)]
    chips += [f'<li class="chip" data-status="{_e(s)}">{n} {_e(s)}</li>' for s, n in counts.items()
              if s not in dict(SUMMARY_WORDS)]
    if total > len(rows):
        running, queued = meta.get("running") or 0, meta.get("queued") or 0
        waiting = max(0, total - len(rows) - running - queued)
        for n, word in ((running, "running"), (queued, "queued on a server"), (waiting, "waiting to be sent")):
            if n:
                chips.append(f'<li class="chip s-pending" data-status="pending">{n} {word}</li>')
    facts = [("Prompts", str(total))]
    if meta.get("exit_code") is not None:
        facts.append(("Exit code", _e(meta["exit_code"])))
    if meta.get("wall_s") is not None:
        facts.append(("Wall time", _e(_seconds(meta["wall_s"]))))
    if meta.get("started"):
        facts.append(("Started", _e(meta["started"])))
    servers = meta.get("servers") or sorted({r["server"] for r in rows if r.get("server")})
    if servers:
        facts.append(("Servers" if len(servers) > 1 else "Server", "<br>".join(_e(s) for s in servers)))
    where = ("Files link to the copies in the output folder (relative links: keep this page beside it)."
             if meta.get("files") is not None else
             "No --output-dir: files link to the servers' /view URLs, which answer only while the server is "
             "up and keeps them.")
    return ('<section id="summary"><h2>Summary</h2><ul class="chips">' + "".join(chips) + "</ul>"
            '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
            f'<p class="mute" id="files-note">{where}</p></section>')


# ---- the grid ---------------------------------------------------------------------------
def _key(value):
    return json.dumps(value, sort_keys=True, default=str)


def axis_value(record, axis):
    if axis == WORKFLOW:
        return record.get("workflow")
    return (record.get("values") or {}).get(axis)


def varying(rows):
    """The inputs whose values differ between the prompts, in the plan's order (the workflow
    file first, when several were given)."""
    order, seen = [], {}
    for r in rows:
        for k, v in (r.get("values") or {}).items():
            if k not in seen:
                order.append(k)
                seen[k] = set()
            seen[k].add(_key(v))
    axes = [k for k in order if len(seen[k]) > 1 or any(k not in (r.get("values") or {}) for r in rows)]
    return ([WORKFLOW] if len({r.get("workflow") for r in rows}) > 1 else []) + axes


def grid_axes(rows):
    """The inputs to lay the grid out by, or ([], why not). An input with a value of its own for
    every prompt (a seed drawn per prompt) names prompts but lays nothing out: it is left out when
    others vary. A grid with far more cells than prompts (values that do not cross) is not drawn."""
    axes = varying(rows)
    if len(axes) > 1:
        axes = [a for a in axes if len(_levels(rows, a)) < len(rows)] or []
        if not axes:
            return [], "every prompt has values of its own: no grid"
    if not axes:
        return [], None
    if len(axes) > 3:
        return [], f"{len(axes)} inputs vary ({', '.join(axes)}): a grid shows at most three"
    cells = 1
    for a in axes:
        cells *= len(_levels(rows, a))
    if cells > 2 * len(rows):
        return [], f"the values of {', '.join(axes)} do not cross ({cells} combinations for {len(rows)} prompts)"
    return axes, None


def _levels(rows, axis):
    """An axis's values in the order they first appear (the plan's order)."""
    out, keys = [], set()
    for r in rows:
        v = axis_value(r, axis)
        k = _key(v)
        if k not in keys:
            keys.add(k)
            out.append(v)
    return out


def _label(axis, value):
    shown = value if isinstance(value, str) else ("—" if value is None else json.dumps(value, default=str))
    return f"{axis} = {shown}"


def _grids(rows, axes, meta):
    """`axes`: [page axis,] row axis[, column axis] (see the module's docstring)."""
    if len(axes) == 1:
        axes = [axes[0], None]
    page_axis, (row_axis, col_axis) = (axes[0] if len(axes) > 2 else None), axes[-2:]
    cells = {}
    for r in rows:
        cells.setdefault(tuple(_key(axis_value(r, a)) for a in axes if a is not None), []).append(r)
    parts = ['<section id="grid"><h2>Grid</h2>',
             f'<p class="mute">Rows: {_e(row_axis)}' + (f"; columns: {_e(col_axis)}" if col_axis else "")
             + (f"; one grid per {_e(page_axis)}" if page_axis else "") + ".</p>"]
    for page in (_levels(rows, page_axis) if page_axis else [None]):
        if page_axis:
            parts.append(f'<h3 class="grid-title">{_e(_label(page_axis, page))}</h3>')
        head = (_key(page),) if page_axis else ()
        parts.append(_grid(rows, row_axis, col_axis, cells, head, meta))
    parts.append("</section>")
    return "".join(parts)


def _grid(rows, row_axis, col_axis, cells, head, meta):
    cols = _levels(rows, col_axis) if col_axis else [None]
    out = ['<div class="scroll"><table class="grid"><thead><tr>'
           f'<th class="corner">{_e(row_axis)}{" ↓ / " + _e(col_axis) + " →" if col_axis else ""}</th>']
    out += [f'<th class="col" scope="col">{_e(_label(col_axis, c) if col_axis else "outputs")}</th>' for c in cols]
    out.append("</tr></thead><tbody>")
    for rv in _levels(rows, row_axis):
        out.append(f'<tr><th class="row" scope="row">{_e(_label(row_axis, rv))}</th>')
        for c in cols:
            key = head + (_key(rv),) + ((_key(c),) if col_axis else ())
            found = cells.get(key, [])
            col_label = _label(col_axis, c) if col_axis else ""
            out.append(f'<td data-row="{_e(_label(row_axis, rv))}" data-col="{_e(col_label)}">'
                       + ("".join(_cell(r, meta, len(found) > 1) for r in found) or '<span class="mute">—</span>')
                       + "</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _cell(r, meta, named):
    """One prompt in a grid cell: its files, or its status and error; its name when the cell
    holds several."""
    status = r.get("status") or "?"
    name = _e(r.get("name") or "")
    media = _media(r, meta)
    label = f'<div class="label">{name}</div>' if named else ""
    if status != "success":
        why = r.get("message") or status
        return (f'<div class="cell" data-name="{name}" title="{name}">{label}<span class="s-{_e(status)}">'
                f'{_e(status)}</span><div class="err">{_cut(why)}</div>{media}</div>')
    return f'<div class="cell" data-name="{name}" title="{name}">{label}{media or "no files"}</div>'


# ---- outputs ---------------------------------------------------------------------------
def _href(out, meta):
    """Where an output is: its file in the output folder (relative link), else its URL."""
    prefix = meta.get("files")
    if prefix is not None and out.get("path"):
        return quote(prefix + out["path"])
    url = out.get("url")
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return url
    return None


def _media(r, meta):
    parts = []
    for out in r.get("outputs") or []:
        href = _href(out, meta)
        name = out.get("filename") or "file"
        if href is None:
            parts.append(f'<div class="mute">{_e(name)} (not saved)</div>')
            continue
        shown = out.get("path") or name  # (the saved file's name says what it is, else the server's)
        ext = shown.rsplit(".", 1)[-1].lower() if "." in shown else ""
        h, n = _e(href), _e(name)
        if ext in IMAGE:
            parts.append(f'<figure><a href="{h}"><img class="thumb" loading="lazy" src="{h}" alt="{n}"></a></figure>')
        elif ext in VIDEO:
            parts.append(f'<video controls preload="metadata" src="{h}" title="{n}"></video>')
        elif ext in AUDIO:
            parts.append(f'<audio controls preload="none" src="{h}" title="{n}"></audio>')
        else:
            parts.append(f'<div><a href="{h}">{n}</a></div>')
    return "".join(parts)


def _gallery(rows, meta):
    cards = []
    for r in rows:
        media = _media(r, meta)
        if not media and r.get("status") == "success":
            continue
        status = r.get("status") or "?"
        err = f'<div class="err">{_cut(r.get("message") or status)}</div>' if status != "success" else ""
        cards.append(f'<div class="card" data-name="{_e(r.get("name") or "")}">{media}{err}'
                     f'<div class="label">{_e(r.get("name") or "")} <span class="s-{_e(status)}">'
                     f'{_e(status)}</span></div></div>')
    if not cards:
        return '<section id="outputs"><h2>Outputs</h2><p class="mute">No output files yet.</p></section>'
    return '<section id="outputs"><h2>Outputs</h2><div class="gallery">' + "".join(cards) + "</div></section>"


# ---- the table ---------------------------------------------------------------------------
def _table(rows):
    statuses = sorted({r.get("status") or "?" for r in rows})
    options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in statuses)
    head = ("<tr><th>#</th><th>Status</th><th>Name</th><th>Values</th><th>Duration</th><th>Server</th>"
            "<th>Error</th><th>Slowest node</th></tr>")
    body = "".join(_row(r) for r in rows)
    return ('<section id="table"><h2>Prompts</h2><div class="filters">'
            '<input id="filter-text" type="search" placeholder="Filter" aria-label="Filter the prompts">'
            f'<select id="filter-status" aria-label="Status"><option value="">every status</option>{options}'
            '</select><span class="mute" id="filter-count"></span></div>'
            f'<div class="scroll"><table class="list" id="prompts"><thead>{head}</thead><tbody>{body}'
            "</tbody></table></div></section>")


def _row(r):
    status = r.get("status") or "?"
    values = "<br>".join(_cut(_label(k, v).replace(" = ", "=", 1)) for k, v in (r.get("values") or {}).items())
    timings = r.get("timings") or {}
    took = timings.get("total_s") if timings.get("total_s") is not None else timings.get("run_s")
    index = r.get("index")
    return (f'<tr data-status="{_e(status)}"><td class="num" data-label="#">{"" if index is None else _e(index)}</td>'
            f'<td data-label="Status" class="nowrap s-{_e(status)}">{_e(status)}</td>'
            f'<td data-label="Name">{_e(r.get("name") or "")}</td>'
            f'<td data-label="Values" class="values">{values}</td>'
            f'<td class="num" data-label="Duration">{_e(_seconds(took)) if took is not None else ""}</td>'
            f'<td data-label="Server">{_e(r.get("server") or "")}</td>'
            f'<td data-label="Error" class="err">{_cut(r.get("message") or "")}</td>'
            f'<td data-label="Slowest node">{_e(slowest(r))}</td></tr>')


def slowest(r):
    timed = [t for t in r.get("node_timings") or [] if t.get("seconds") is not None and not t.get("cached")]
    if not timed:
        return ""
    t = max(timed, key=lambda t: t["seconds"])
    return f"{t.get('title') or t.get('node')} ({_seconds(t['seconds'])})"


def _cut(text):
    text = text if isinstance(text, str) else str(text)
    if len(text) <= MAX_TEXT:
        return _e(text)
    return f'<span title="{_e(text)}">{_e(text[:MAX_TEXT])}…</span>'


def _seconds(s):
    s = float(s)
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    whole = int(s + 0.5)
    return f"{whole // 60} min {whole % 60} s" if whole < 3600 else f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class Pace:
    """When the run loop rewrites the report: at the start, then at most every `every` seconds
    and only if something changed; a slow render (a huge batch) spaces the rewrites out so they
    never take more than a fifth of the time. Pure: the loop passes the clock."""

    def __init__(self, every=3.0):
        self.every = every
        self.at = None  # the earliest next rewrite (None: the first is due at once)
        self.state = None  # what the last rewrite showed

    def due(self, now, state, took=0.0):
        """Rewrite now? `state`: anything that changes when the page would (compared for
        equality); `took`: how long the last rewrite took."""
        if self.at is not None and now < self.at:
            return False
        if state == self.state:
            return False
        self.state = state
        self.at = now + max(self.every, 5 * took)
        return True
