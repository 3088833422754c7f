"""--report with --expect: a section showing, for every output that differs from its expected
file, the expected file, the output and the difference image side by side, with the figures.

Pure, like htmlreport: manifest lines (their `expected` lists) in, HTML text out. Every string
is escaped; links are relative paths (quoted) or file: URLs of absolute paths, never anything
that could run.
"""

from html import escape
from urllib.parse import quote

FAILING = ("mismatch", "missing", "extra", "error")
IMAGE = ("png", "jpg", "jpeg", "webp", "gif", "bmp", "apng")
STYLE = ("<style>.s-mismatch{color:var(--bad)}.diffs{display:grid;gap:1rem}"
         ".diff{background:var(--card);border:1px solid var(--line);border-radius:.4rem;padding:.5rem}"
         ".trio{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.5rem}"
         ".trio figure{margin:0}.trio img{display:block;width:100%;max-width:20rem;height:auto;"
         "image-rendering:pixelated;background:var(--card)}.trio figcaption{font-size:.85rem;color:var(--mute)}"
         "@media (max-width:640px){.trio{grid-template-columns:1fr}}</style>")


def _e(value):
    return escape(value if isinstance(value, str) else str(value), quote=True)


def link(path, prefix):
    """A link to a file: `prefix` + a relative path (the page's way to the folder it is in), or a
    file: URL for an absolute path; None when there is no file."""
    if not isinstance(path, str) or not path:
        return None
    if path.startswith("/"):
        return "file://" + quote(path)
    if prefix is None:
        return None
    return quote(prefix + path)


def section(rows, meta):
    """The "Differences" section ("" when nothing differs). `meta["expected"]`: the way from the
    page to --expect's folder ("expected/"); `meta["files"]`: to the output folder (None: none)."""
    cards = []
    for r in rows:
        for o in r.get("expected") or []:
            if isinstance(o, dict) and o.get("status") in FAILING:
                cards.append(_card(r, o, meta))
    if not cards:
        return ""
    return (f'{STYLE}<section id="differences"><h2>Differences from the expected files</h2>'
            f'<p class="mute">{len(cards)} output{"s" if len(cards) != 1 else ""} differ: expected, got and '
            'the difference (changed pixels in red, small differences in yellow).</p>'
            f'<div class="diffs">{"".join(cards)}</div></section>')


def _card(r, o, meta):
    name = _e(r.get("name") or "")
    shots = [("expected", link(o.get("file"), meta.get("expected")) if o.get("status") != "missing" else None),
             ("got", link(o.get("got"), meta.get("files"))),
             ("difference", link(o.get("diff"), meta.get("files")))]
    if shots[1][1] is None and shots[2][1] is None:  # a text output, or one not saved: no pictures
        figures_html = f'<div><a href="{_e(shots[0][1])}">expected file</a></div>' if shots[0][1] else ""
    else:
        figures_html = f'<div class="trio">{"".join(_figure(word, href) for word, href in shots)}</div>'
    return (f'<div class="diff" data-name="{name}"><div><strong>{name}</strong>: {_e(o.get("output") or "")} '
            f'<span class="s-mismatch">{_e(o.get("status"))}</span></div>'
            f'<div class="err">{_e(o.get("message") or "")}</div>{figures_html}</div>')


def _figure(word, href):
    if href is None:
        return f'<figure><div class="mute">no {word} file</div><figcaption>{word}</figcaption></figure>'
    h = _e(href)
    if href.rsplit(".", 1)[-1].lower() in IMAGE:
        inner = f'<a href="{h}"><img loading="lazy" src="{h}" alt="{word}"></a>'
    else:
        inner = f'<a href="{h}">{word}</a>'
    return f'<figure data-kind="{word}">{inner}<figcaption>{word}</figcaption></figure>'
