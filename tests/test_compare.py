"""--expect's comparison (compare.py) and expected-file layout (expect.py), on seeded images."""

import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from comfy_cli import compare, expect
from comfy_cli.compare import DEFAULT, Tolerance, parse_tolerance


def noise(seed, size=(64, 64), mode="RGB"):
    w, h = size
    return Image.frombytes(mode, size, random.Random(seed).randbytes(w * h * len(mode)))


def gradient(size=(128, 96)):
    """A smooth picture (what a JPEG encoder handles as on a real photo)."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([(x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)) for y in range(h) for x in range(w)])
    return img


def jitter(img, amount, seed=99):
    """Each channel moved by up to `amount` levels (seeded): GPU/encoder noise."""
    rng = random.Random(seed)
    data = bytes(min(255, max(0, v + rng.randint(-amount, amount))) for v in img.tobytes())
    return Image.frombytes(img.mode, img.size, data)


def save(img, path, **kw):
    img.save(path, **kw)
    return str(path)


# ---- tolerance -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("2", Tolerance(2.0, 0.01)), ("0", Tolerance(0.0, 0.01)), ("1.5,0.5%", Tolerance(1.5, 0.005)),
    (" 3 , 10% ", Tolerance(3.0, 0.1)), ("0,0%", Tolerance(0.0, 0.0)),
])
def test_parse_tolerance(text, want):
    assert parse_tolerance(text) == want


@pytest.mark.parametrize("text, words", [
    ("", "MEAN"), ("x", "not a number"), ("1,2", "must end with %"), ("1,a%", "not a percentage"),
    ("-1", "between 0 and 255"), ("1,200%", "between 0% and 100%"), ("1,2%,3", "MEAN or MEAN,SHARE%"),
])
def test_parse_tolerance_refuses(text, words):
    with pytest.raises(ValueError, match=words):
        parse_tolerance(text)


def test_default_tolerance_is_documented_value():
    assert (DEFAULT.mean, DEFAULT.share, compare.OFF_LEVEL) == (2.0, 0.01, 32)
    assert str(DEFAULT) == "2.0,1.0%"


# ---- comparing files -------------------------------------------------------------------------
def test_identical_bytes_match_without_decoding(tmp_path):
    a = save(noise(1), tmp_path / "a.png")
    b = tmp_path / "b.png"
    b.write_bytes(open(a, "rb").read())
    r = compare.compare_files(a, str(b))
    assert (r.same, r.how) == (True, "bytes")


def test_same_pixels_other_encoding_match(tmp_path):
    a = save(noise(1), tmp_path / "a.png", compress_level=1)
    b = save(noise(1), tmp_path / "b.png", compress_level=9)
    assert open(a, "rb").read() != open(b, "rb").read()
    r = compare.compare_files(a, b)
    assert (r.same, r.how, r.mean, r.share) == (True, "pixels", 0.0, 0.0)


def test_slight_noise_is_within_default_tolerance(tmp_path):
    a = save(noise(1), tmp_path / "a.png")
    b = save(jitter(noise(1), 2), tmp_path / "b.png")
    r = compare.compare_files(a, b)
    assert r.same and 0.5 < r.mean < 2.0 and r.share == 0.0


def test_a_jpeg_of_the_same_picture_is_within_default_tolerance(tmp_path):
    a = save(gradient(), tmp_path / "a.png")
    b = save(gradient(), tmp_path / "b.jpg", quality=90)
    r = compare.compare_files(a, b)
    assert r.same and r.mean > 0, r


def test_webp_is_decoded(tmp_path):
    a = save(gradient(), tmp_path / "a.webp", lossless=True)
    b = save(gradient(), tmp_path / "b.png")
    assert compare.compare_files(a, b).same


def test_another_seed_is_a_changed_picture(tmp_path):
    a = save(noise(1), tmp_path / "a.png")
    b = save(noise(2), tmp_path / "b.png")
    r = compare.compare_files(a, b)
    assert not r.same and r.mean > 50 and r.share > 0.5
    assert r.problem.startswith(f"mean difference {r.mean:.1f} > 2.0, ")
    assert f"{r.share * 100:.0f}% of pixels off (> 1.0%)" in r.problem


def test_a_small_changed_patch_fails_by_the_share(tmp_path):
    img = gradient((100, 100))
    a = save(img, tmp_path / "a.png")
    box = (40, 40, 52, 52)  # 12x12 = 1.44% of the pixels, 60 levels brighter
    img.paste(img.crop(box).point(lambda v: v + 60), box)
    b = save(img, tmp_path / "b.png")
    r = compare.compare_files(a, b)
    assert not r.same and r.mean < 2.0 and abs(r.share - 0.0144) < 1e-9
    assert "<= 2.0" in r.problem and "1.4% of pixels off (> 1.0%)" in r.problem


def test_a_brightness_shift_fails_by_the_mean(tmp_path):
    img = gradient()
    a = save(img, tmp_path / "a.png")
    b = save(img.point(lambda v: min(255, v + 6)), tmp_path / "b.png")
    r = compare.compare_files(a, b)
    assert not r.same and r.share == 0.0 and 4 < r.mean <= 6


def test_tolerance_is_honoured(tmp_path):
    a = save(noise(1), tmp_path / "a.png")
    b = save(jitter(noise(1), 2), tmp_path / "b.png")
    assert not compare.compare_files(a, b, Tolerance(0.0, 0.0)).same
    c = save(noise(2), tmp_path / "c.png")
    assert compare.compare_files(a, c, Tolerance(255.0, 1.0)).same


def test_wrong_size(tmp_path):
    a = save(noise(1, (64, 64)), tmp_path / "a.png")
    b = save(noise(1, (64, 32)), tmp_path / "b.png")
    r = compare.compare_files(a, b)
    assert (r.same, r.problem, r.size, r.diff) == (False, "size 64x32, expected 64x64", (64, 32), None)


def test_alpha_against_none(tmp_path):
    a = save(noise(1), tmp_path / "a.png")
    b = save(noise(1).convert("RGBA"), tmp_path / "b.png")
    assert compare.compare_files(a, b).same
    c = noise(1).convert("RGBA")
    c.putalpha(0)
    assert not compare.compare_files(a, save(c, tmp_path / "c.png")).same


def test_first_frame_of_an_animation(tmp_path):
    frames = [noise(1).quantize(), noise(2).quantize()]
    a = tmp_path / "a.gif"
    frames[0].save(a, save_all=True, append_images=frames[1:])
    b = tmp_path / "b.gif"
    frames[0].save(b, save_all=True, append_images=[noise(3).quantize()])
    assert compare.compare_files(str(a), str(b)).same  # only the first frame counts
    c = save(frames[1], tmp_path / "c.gif")
    assert not compare.compare_files(str(a), c).same


def test_other_files_are_compared_byte_for_byte(tmp_path):
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_bytes(b"hello")
    b.write_bytes(b"hello")
    c.write_bytes(b"hellO")
    assert compare.compare_files(str(a), str(b)).same
    r = compare.compare_files(str(a), str(c))
    assert (r.same, r.how, r.problem) == (False, "bytes", "the bytes differ")


def test_without_decoding_images_are_bytes(tmp_path):
    a = save(noise(1), tmp_path / "a.png", compress_level=1)
    b = save(noise(1), tmp_path / "b.png", compress_level=9)
    r = compare.compare_files(a, b, decode=False)
    assert (r.same, r.how) == (False, "bytes")


def test_a_broken_image_is_a_difference_not_a_crash(tmp_path):
    a = save(noise(1), tmp_path / "a.png")
    b = tmp_path / "b.png"
    b.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = compare.compare_files(a, str(b))
    assert not r.same and "b.png cannot be decoded" in r.problem


def test_without_pillow_installed(tmp_path):
    """A process where Pillow cannot be imported compares images byte for byte."""
    a = save(noise(1), tmp_path / "a.png", compress_level=1)
    b = save(noise(1), tmp_path / "b.png", compress_level=9)
    code = ("import sys; sys.modules['PIL'] = None\n"
            "from comfy_cli import compare\n"
            f"r = compare.compare_files({a!r}, {b!r})\n"
            "print(compare.pillow(), r.same, r.how)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["None", "False", "bytes"], out.stderr


# ---- the difference image --------------------------------------------------------------------
def test_diff_image_highlights_the_changed_pixels(tmp_path):
    img = gradient((40, 30))
    a = save(img, tmp_path / "a.png")
    ImageDraw.Draw(img).rectangle((10, 10, 19, 14), fill=(0, 255, 0))
    b = save(img, tmp_path / "b.png")
    r = compare.compare_files(a, b)
    path = compare.write_diff(r, b, compare.diff_path(b))
    assert path == str(tmp_path / "b.diff.png")
    with Image.open(path) as d:
        assert d.size == (40, 30)
        d = d.convert("RGB")
        assert d.getpixel((12, 12)) == (230, 0, 0)  # changed
        r_, g, b_ = d.getpixel((30, 25))  # unchanged: faded grey
        assert r_ == g == b_ and r_ > 150
    # never over an existing file unless asked
    again = compare.write_diff(r, b, compare.diff_path(b))
    assert again == str(tmp_path / "b.diff_1.png")
    assert compare.write_diff(r, b, compare.diff_path(b), overwrite=True) == path
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary file left


def test_no_diff_image_for_a_size_change(tmp_path):
    a = save(noise(1, (8, 8)), tmp_path / "a.png")
    b = save(noise(1, (8, 9)), tmp_path / "b.png")
    assert compare.write_diff(compare.compare_files(a, b), b, str(tmp_path / "d.png")) is None
    assert not (tmp_path / "d.png").exists()


# ---- the layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, want", [
    ("txt2img", "txt2img"), ("txt2img#2", "txt2img#2"), ("two_samplers", "two_samplers"),
    ("txt2img[cfg=6,steps=20]", "txt2img[cfg=6,steps=20]"),
    ("a/b", "a%2Fb"), ("..", "%2E%2E"), (".hidden", "%2Ehidden"), ("x:y", "x%3Ay"), ("50%", "50%25"),
    ("trail. ", "trail%2E%20"), ("CON", "%43ON"), ("nul.txt", "%6Eul.txt"), ("", "%00"), ("é", "%C3%A9"),
    ("a\\b*?<>|\"", "a%5Cb%2A%3F%3C%3E%7C%22"),
])
def test_safe_name(name, want):
    assert expect.safe_name(name) == want


def test_safe_names_differ_and_stay_short():
    names = ["a/b", "a%2Fb", "a_b", "a b", "x" * 300, "x" * 299 + "y"]
    safe = [expect.safe_name(n) for n in names]
    assert len(set(safe)) == len(safe)
    assert all(len(s) <= expect.MAX_NAME for s in safe)


def test_entries():
    outputs = {
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"},
                         {"filename": "b.PNG", "subfolder": "s", "type": "output"},
                         {"filename": "t.png", "subfolder": "", "type": "temp"}]},
        "12:5": {"gifs": [{"filename": "c.gif", "type": "output"}], "text": ["hi", "there"]},
        "7": {"animated": [False], "text": []},
    }
    saved = {("9", "a.png", "", "output"): "/o/a.png"}
    got = expect.entries(outputs, saved)
    assert [(e.label, e.stem + e.ext, e.path, e.text) for e in got] == [
        ("node 9 image 0", "9_0.png", "/o/a.png", None),
        ("node 9 image 1", "9_1.png", None, None),
        ("node 12:5 gif 0", "12%3A5_0.gif", None, None),
        ("node 12:5 text 0", "12%3A5_text_0.txt", None, "hi"),
        ("node 12:5 text 1", "12%3A5_text_1.txt", None, "there"),
    ]
    assert [e.stem for e in expect.entries(outputs, saved, include_temp=True)][:3] == ["9_0", "9_1", "9_2"]


# ---- checking a prompt -----------------------------------------------------------------------
def tree(root):
    """Every file under root with its bytes: to see that nothing was written."""
    found = {}
    for folder, _, names in os.walk(root):
        for n in names:
            p = os.path.join(folder, n)
            found[os.path.relpath(p, root)] = open(p, "rb").read()
    return found


@pytest.fixture
def case(tmp_path):
    """An expected folder for prompt 'wf' and an output folder."""
    exp, out = tmp_path / "expected", tmp_path / "out"
    (exp / "wf").mkdir(parents=True)
    out.mkdir()
    return exp, out


def image_entry(out, name, img, index=0, node="9"):
    path = save(img, out / name)
    return expect.Entry(node, "image", index, f"{node}_{index}", ".png", path=path)


def test_check_prompt_outcomes(case):
    exp, out = case
    save(noise(1), exp / "wf" / "9_0.png")
    save(noise(2), exp / "wf" / "9_1.png")
    save(noise(3, (8, 8)), exp / "wf" / "9_2.png")
    (exp / "wf" / "9_text_0.txt").write_text("hello")
    (exp / "wf" / "5_0.txt").write_bytes(b"abc")
    (exp / "wf" / "3_0.png").write_bytes(b"gone")
    found = [
        image_entry(out, "a.png", jitter(noise(1), 1)),  # noisy: match
        image_entry(out, "b.png", noise(20), 1),  # changed
        image_entry(out, "c.png", noise(3, (8, 9)), 2),  # wrong size
        image_entry(out, "d.png", noise(4), 3),  # no expected file
        expect.Entry("9", "text", 0, "9_text_0", ".txt", text="hello"),
        expect.Entry("5", "file", 0, "5_0", ".txt", path=str(out / "e.txt")),  # not an image: bytes
    ]
    (out / "e.txt").write_bytes(b"abd")
    before = tree(exp)
    got = expect.check_prompt(expect.Check(str(exp)), "wf", found)
    assert tree(exp) == before  # nothing in DIR is written without --update-expected
    assert [(o.label, o.status) for o in got] == [
        ("node 9 image 0", "match"), ("node 9 image 1", "mismatch"), ("node 9 image 2", "mismatch"),
        ("node 9 image 3", "missing"), ("node 9 text 0", "match"), ("node 5 file 0", "mismatch"),
        ("expected file 3_0.png", "extra"),
    ]
    changed = got[1]
    assert changed.line().startswith("node 9 image 1: mean difference ") and "of pixels off" in changed.line()
    assert changed.diff == str(out / "b.diff.png") and os.path.exists(changed.diff)
    assert changed.expected == str(exp / "wf" / "9_1.png") and changed.got == str(out / "b.png")
    assert got[2].message == "size 8x9, expected 8x8" and got[2].diff is None
    assert got[3].line() == "node 9 image 3: no expected file: run once with --update-expected"
    assert got[5].message == "the bytes differ"
    assert got[6].message == "expected, but this run produced no such output"
    assert [o.failed for o in got] == [False, True, True, True, False, True, True]
    assert got[1].as_dict()["mean_difference"] > 50 and "pixels_off" in got[1].as_dict()


def test_text_outputs_are_compared_exactly(case):
    exp, _ = case
    (exp / "wf" / "4_text_0.txt").write_text("mean=0.5")
    got = expect.check_prompt(expect.Check(str(exp)), "wf",
                              [expect.Entry("4", "text", 0, "4_text_0", ".txt", text="mean=0.50")])
    assert got[0].status == "mismatch"
    assert got[0].message == "the text differs: expected 'mean=0.5', got 'mean=0.50'"


def test_an_output_not_saved_is_not_a_pass(case):
    exp, _ = case
    save(noise(1), exp / "wf" / "9_0.png")
    got = expect.check_prompt(expect.Check(str(exp)), "wf", [expect.Entry("9", "image", 0, "9_0", ".png")])
    assert (got[0].status, got[0].failed) == ("error", True)


def test_a_new_prompt_has_no_folder(case):
    exp, out = case
    got = expect.check_prompt(expect.Check(str(exp)), "new one", [image_entry(out, "a.png", noise(1))])
    assert [o.status for o in got] == ["missing"]
    assert not (exp / "new one").exists()


def test_found_by_stem_when_the_format_changed(case):
    exp, out = case
    save(noise(1), exp / "wf" / "9_0.webp", lossless=True)
    got = expect.check_prompt(expect.Check(str(exp)), "wf", [image_entry(out, "a.png", noise(1))])
    assert [(o.status, os.path.basename(o.expected)) for o in got] == [("match", "9_0.webp")]


def test_update_expected(case):
    exp, out = case
    save(noise(1), exp / "wf" / "9_0.png")
    save(noise(2), exp / "wf" / "9_1.png")
    save(noise(3), exp / "wf" / "9_2.webp", lossless=True)
    (exp / "wf" / "8_0.png").write_bytes(b"old")
    same = open(exp / "wf" / "9_0.png", "rb").read()
    found = [
        image_entry(out, "a.png", jitter(noise(1), 1)),  # within tolerance: left alone
        image_entry(out, "b.png", noise(20), 1),  # changed: updated
        image_entry(out, "c.png", noise(30), 2),  # changed and now a PNG: the webp goes
        image_entry(out, "d.png", noise(4), 3),  # new: added
        expect.Entry("9", "text", 0, "9_text_0", ".txt", text="héllo"),
    ]
    got = expect.check_prompt(expect.Check(str(exp), update=True), "wf", found)
    assert [(o.label, o.status) for o in got] == [
        ("node 9 image 0", "match"), ("node 9 image 1", "updated"), ("node 9 image 2", "updated"),
        ("node 9 image 3", "added"), ("node 9 text 0", "added"), ("expected file 8_0.png", "removed"),
    ]
    assert not any(o.failed for o in got)
    assert got[1].message.startswith("updated (it had: mean difference")
    assert sorted(os.listdir(exp / "wf")) == ["9_0.png", "9_1.png", "9_2.png", "9_3.png", "9_text_0.txt"]
    assert open(exp / "wf" / "9_0.png", "rb").read() == same
    for name, src in (("9_1.png", "b.png"), ("9_2.png", "c.png"), ("9_3.png", "d.png")):
        assert open(exp / "wf" / name, "rb").read() == open(out / src, "rb").read()
    assert (exp / "wf" / "9_text_0.txt").read_text(encoding="utf-8") == "héllo"
    assert not (out / "b.diff.png").exists()  # an update draws no difference
    again = expect.check_prompt(expect.Check(str(exp)), "wf", found)
    assert [o.status for o in again] == ["match"] * 5


def test_update_makes_the_folder(case):
    exp, out = case
    got = expect.check_prompt(expect.Check(str(exp / "new"), update=True), "a/b", [image_entry(out, "a.png", noise(1))])
    assert got[0].status == "added"
    assert os.listdir(exp / "new" / "a%2Fb") == ["9_0.png"]


# ---- the simulator's pictures ----------------------------------------------------------------
def test_simulator_pictures_are_seeded_and_decodable(tmp_path):
    import io

    from comfy_cli.sim.images import png_bytes, sized_image

    a, b = sized_image(5, 40, 30), sized_image(5, 40, 30)
    assert a.rgb == b.rgb and png_bytes(a) == png_bytes(b)
    assert sized_image(6, 40, 30).rgb != a.rgb
    noisy = sized_image(5, 40, 30, noise=2, noise_seed=1)
    assert noisy.rgb == sized_image(5, 40, 30, noise=2, noise_seed=1).rgb != a.rgb
    assert max(abs(x - y) for x, y in zip(a.rgb, noisy.rgb)) <= 2
    with Image.open(io.BytesIO(png_bytes(a, [("prompt", "{}")]))) as img:
        assert (img.size, img.mode, img.tobytes()) == ((40, 30), "RGB", a.rgb)
    p, q = tmp_path / "p.png", tmp_path / "q.png"
    p.write_bytes(png_bytes(a))
    q.write_bytes(png_bytes(noisy))
    assert compare.compare_files(str(p), str(q)).same


# ---- the report's differences section ---------------------------------------------------------
def test_report_shows_expected_got_and_difference_side_by_side():
    from comfy_cli import htmldiff, htmlreport

    hostile = '<img src=x onerror="alert(1)">'
    record = {"index": 0, "name": hostile, "status": "mismatch", "message": "mismatch: node 9 image 0: …",
              "values": {}, "outputs": [], "expected": [
                  {"output": "node 9 image 0", "status": "mismatch", "file": "wf/9_0.png", "got": "pic_1.png",
                   "diff": "pic_1.diff.png", "message": "mean difference 12.3 > 2.0, 41% of pixels off"},
                  {"output": "node 9 image 1", "status": "missing", "file": "wf/9_1.png", "got": "/tmp/x y.png",
                   "message": "no expected file: run once with --update-expected"},
                  {"output": "node 4 text 0", "status": "match", "file": "wf/4_text_0.txt"}]}
    page = htmlreport.render([record], {"files": "out/", "expected": "../expected/", "finished": True})
    part = page[page.index('<section id="differences">'):]
    part = part[:part.index("</section>")]
    assert part.count('<div class="diff"') == 2  # the match is not shown
    assert '<img loading="lazy" src="../expected/wf/9_0.png" alt="expected">' in part
    assert '<img loading="lazy" src="out/pic_1.png" alt="got">' in part
    assert '<img loading="lazy" src="out/pic_1.diff.png" alt="difference">' in part
    assert "mean difference 12.3 &gt; 2.0, 41% of pixels off" in part
    assert 'src="file:///tmp/x%20y.png"' in part and "no expected file" in part
    assert hostile not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in part
    assert htmldiff.section([dict(record, expected=[record["expected"][2]])], {}) == ""
    text = dict(record["expected"][0], output="node 4 text 1", file="wf/4_text_1.txt", got=None, diff=None)
    only = htmldiff.section([dict(record, expected=[text])], {"expected": "e/"})
    assert '<a href="e/wf/4_text_1.txt">expected file</a>' in only and "trio" not in only.split("</style>")[1]


# ---- the fast path against a plain computation ------------------------------------------------
def first_frame(path):
    """The rule: the first frame, RGB, or RGBA when it has transparency."""
    with Image.open(path) as img:
        img.seek(0)
        alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
        return img.convert("RGBA" if alpha else "RGB")


def reference(expected, got, tolerance=DEFAULT):
    """(same, mean, share, size, largest channel difference per pixel) by a loop over pixels."""
    if open(expected, "rb").read() == open(got, "rb").read():
        return True, None, None, None, None
    a, b = first_frame(expected), first_frame(got)
    if a.size != b.size:
        return False, None, None, b.size, None
    if a.mode != b.mode:
        a, b = a.convert("RGBA"), b.convert("RGBA")
    bands = len(a.mode)
    one, two = a.tobytes(), b.tobytes()
    count = a.size[0] * a.size[1]
    total, off, largest = 0, 0, []
    for i in range(count):
        d = [abs(one[i * bands + k] - two[i * bands + k]) for k in range(bands)]
        total += sum(d)
        largest.append(max(d))
        off += max(d) > compare.OFF_LEVEL
    mean, share = total / (count * bands), off / count
    return mean <= tolerance.mean and share <= tolerance.share, mean, share, b.size, largest


def reference_diff(got, largest):
    """The difference image drawn as the first version did: RGB composites over the faded output."""
    with Image.open(got) as img:
        img.seek(0)
        grey = img.convert("L").convert("RGB")
    diff = Image.new("L", grey.size)
    diff.putdata(largest)
    faded = Image.blend(grey, Image.new("RGB", grey.size, (255, 255, 255)), 0.6)
    small = diff.point([0] + [255] * 32 + [0] * 223)
    off = diff.point([0] * 33 + [255] * 223)
    picture = Image.composite(Image.new("RGB", grey.size, (255, 200, 0)), faded, small)
    return Image.composite(Image.new("RGB", grey.size, (230, 0, 0)), picture, off).tobytes()


def animated(path, frames, **kw):
    frames[0].save(path, save_all=True, append_images=frames[1:], **kw)
    return str(path)


def with_text(img, path, **text):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return save(img, path, pnginfo=info)


def patched(img, box=(5, 5, 15, 11), by=80):
    img = img.copy()
    img.paste(img.crop(box).point(lambda v: (v + by) % 256), box)
    return img


# The expected picture decoded on the helper thread (even on one CPU): every CPU, and two at least.
CPUS = (compare.cpus_allowed() or frozenset()) | {0, 1}

PAIRS = {  # name: (expected, got), each made in a folder
    "equal": lambda d: (save(gradient(), d / "a.png"), save(gradient(), d / "b.png")),
    "other encoding": lambda d: (save(gradient(), d / "a.png", compress_level=9),
                                 save(gradient(), d / "b.png", compress_level=1)),
    "only the text differs": lambda d: (with_text(gradient(), d / "a.png", prompt='{"seed": 1}'),
                                        with_text(gradient(), d / "b.png", prompt='{"seed": 1}', workflow="{}")),
    "noisy": lambda d: (save(gradient(), d / "a.png"), save(jitter(gradient(), 3), d / "b.png")),
    "noisy, one stray": lambda d: (save(gradient(), d / "a.png"),
                                   save(patched(jitter(gradient(), 2), (3, 3, 4, 4), 100), d / "b.png")),
    "one pixel 33 levels off": lambda d: (save(gradient(), d / "a.png"),
                                          save(patched(gradient(), (3, 3, 4, 4), 33), d / "b.png")),
    "one pixel 32 levels off": lambda d: (save(gradient(), d / "a.png"),
                                          save(patched(gradient(), (3, 3, 4, 4), 32), d / "b.png")),
    "changed": lambda d: (save(noise(1, (48, 40)), d / "a.png"), save(noise(2, (48, 40)), d / "b.png")),
    "changed patch": lambda d: (save(gradient(), d / "a.png"), save(patched(gradient()), d / "b.png")),
    "brighter": lambda d: (save(gradient(), d / "a.png"),
                           save(gradient().point(lambda v: min(255, v + 9)), d / "b.png")),
    "wrong size": lambda d: (save(gradient((48, 40)), d / "a.png"), save(gradient((40, 48)), d / "b.png")),
    "RGBA against RGB": lambda d: (save(gradient(), d / "a.png"), save(patched(gradient()).convert("RGBA"), d / "b.png")),
    "RGB against RGBA": lambda d: (save(noise(3, (48, 40), "RGBA"), d / "a.png"), save(gradient((48, 40)), d / "b.png")),
    "greyscale": lambda d: (save(gradient().convert("L"), d / "a.png"), save(patched(gradient()), d / "b.png")),
    "palette": lambda d: (save(gradient(), d / "a.png"), save(patched(gradient()).quantize(64), d / "b.png")),
    "palette with transparency": lambda d: (save(gradient(), d / "a.png"),
                                            save(patched(gradient()).quantize(64), d / "b.png", transparency=3)),
    "jpeg": lambda d: (save(gradient(), d / "a.png"), save(patched(gradient()), d / "b.jpg", quality=70)),
    "animated webp": lambda d: (save(gradient(), d / "a.png"),
                                animated(d / "b.webp", [patched(gradient()), noise(4, (128, 96))], lossless=True)),
    "animated gif": lambda d: (animated(d / "a.gif", [gradient().quantize(), noise(5, (128, 96)).quantize()]),
                               animated(d / "b.gif", [patched(gradient()).quantize(), gradient().quantize()])),
    "animated png": lambda d: (save(gradient(), d / "a.png"),
                               animated(d / "b.png", [patched(gradient()), noise(6, (128, 96))])),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_figures_and_difference_image_are_the_plain_computations(tmp_path, name):
    """The comparison works in C, skips decoding where it can and draws the difference image as a
    palette PNG: its figures and pixels are exactly those of a loop over the pixels and of the
    first version's drawing."""
    expected, got = PAIRS[name](tmp_path)
    for tolerance, cpus in ((DEFAULT, None), (Tolerance(0.0, 0.0), None), (DEFAULT, CPUS), (Tolerance(0.0, 0.0), CPUS)):
        same, mean, share, size, largest = reference(expected, got, tolerance)
        r = compare.compare_files(expected, got, tolerance, cpus=cpus)
        assert (r.same, r.mean, r.share) == (same, mean, share), name
        assert r.share == 0 or name != "one pixel 32 levels off"
        if size is not None:
            assert r.size == size
        if largest is None or same:
            continue
        path = compare.write_diff(r, got, str(tmp_path / f"d{tolerance.mean}.png"))
        with Image.open(path) as drawn:
            assert drawn.convert("RGB").tobytes() == reference_diff(got, largest), name


def test_the_cases_cover_every_way_through(tmp_path):
    """The pairs above take each way: bytes, picture chunks, decoding (with and without the
    output's own pixels kept for the drawing), a size seen before decoding."""
    seen = {}
    for name, make in PAIRS.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        r = compare.compare_files(*make(folder))
        way = (r.how, r.diff is not None, r.picture is not None, r.mean is None)
        seen.setdefault(way, name)
    assert set(seen) == {("bytes", False, False, True), ("pixels", False, False, False),
                         ("pixels", True, False, False), ("pixels", True, True, False),
                         ("pixels", False, False, True)}, seen


def test_a_png_with_other_text_is_not_decoded(tmp_path):
    """Same picture chunks: the same pixels, known without decoding (a broken picture stream shows it)."""
    from comfy_cli import pngdata

    a = with_text(gradient(), tmp_path / "a.png", workflow='{"nodes": [1]}')
    b = with_text(gradient(), tmp_path / "b.png", workflow='{"nodes": [2]}')
    assert pngdata.same_pixels(open(a, "rb").read(), open(b, "rb").read()) == (128, 96)
    c = save(gradient(), tmp_path / "c.png", compress_level=1)
    assert pngdata.same_pixels(open(a, "rb").read(), open(c, "rb").read()) is None  # other IDAT: decode
    assert pngdata.same_pixels(b"GIF89a", b"GIF89a") is None
    whole = open(a, "rb").read()
    assert pngdata.same_pixels(whole[:-12], whole[:-12]) is None  # no IEND
    assert compare.compare_files(a, b) == compare.Result(True, "pixels", None, 0.0, 0.0, (128, 96))


@settings(database=None, derandomize=True, deadline=None, max_examples=60,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["RGB", "RGBA", "L", "LA", "P"]), st.sampled_from(["RGB", "RGBA", "L", "P"]),
       st.integers(1, 9), st.integers(1, 7), st.binary(min_size=2, max_size=2),
       st.sampled_from([0, 1, 20, 40, 255]), st.sampled_from(["png", "webp", "gif"]))
def test_any_pair_has_the_figures_of_the_plain_computation(tmp_path, one, two, w, h, seeds, amount, ext):
    base = noise(seeds[0], (w, h), "RGB")
    a = save(base.convert(one) if one != "P" else base.quantize(16), tmp_path / "a.png")
    other = jitter(base, amount, seed=seeds[1])
    b = save(other.convert(two) if two != "P" else other.quantize(16), tmp_path / f"b.{ext}",
             **({"lossless": True} if ext == "webp" else {}))
    same, mean, share, _, largest = reference(a, b, Tolerance(1.0, 0.05))
    r = compare.compare_files(a, b, Tolerance(1.0, 0.05))
    assert (r.same, r.mean, r.share) == (same, mean, share)
    if largest is not None and not same:
        with Image.open(compare.write_diff(r, b, str(tmp_path / "d.png"), overwrite=True)) as drawn:
            assert drawn.convert("RGB").tobytes() == reference_diff(b, largest)


def test_the_helper_thread_may_use_every_cpu_of_the_run(tmp_path):
    """A run keeps its threads on one CPU; the decoding thread is let out onto the CPUs the run
    was allowed, and what goes wrong is told as when decoding in turn (the expected file first)."""
    import threading

    allowed = compare.cpus_allowed()
    a, b = save(gradient(), tmp_path / "a.png"), save(jitter(gradient(), 3), tmp_path / "b.png")
    cut_a, cut_b = tmp_path / "cut_a.png", tmp_path / "cut_b.png"
    cut_a.write_bytes(open(a, "rb").read()[:300])  # the header is there, the pixels not
    cut_b.write_bytes(open(b, "rb").read()[:200])
    seen = {}

    def pinned():
        os.sched_setaffinity(0, {min(allowed)})
        seen["mine"] = os.sched_getaffinity(0)
        seen["result"] = compare.compare_files(a, b, cpus=CPUS)
        seen["got broken"] = compare.compare_files(a, str(cut_b), cpus=CPUS)
        seen["both broken"] = compare.compare_files(str(cut_a), str(cut_b), cpus=CPUS)

    worker = threading.Thread(target=pinned)
    worker.start()
    worker.join(30)
    assert seen["mine"] == {min(allowed)}
    assert seen["result"].same and seen["result"].mean > 0
    assert "cut_b.png cannot be decoded" in seen["got broken"].problem
    assert "cut_a.png cannot be decoded" in seen["both broken"].problem  # the expected one, told first
    helper = [t for t in threading.enumerate() if t.name.startswith("comfy-cli-decode")]
    assert len(helper) == 1 and os.sched_getaffinity(helper[0].native_id) == allowed


def test_the_benchmark_runs_small():
    """tests/bench/bench_compare.py at a tiny size: every kind of pair made, each outcome as made."""
    script = os.path.join(os.path.dirname(__file__), "bench", "bench_compare.py")
    out = subprocess.run([sys.executable, script, "--count", "80", "--size", "32"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for kind in ("identical files", "same picture, other text", "noisy, within tolerance", "changed picture",
                 "changed patch (1.4%)", "wrong size", "all but identical"):
        assert f"  {kind} " in out.stdout, out.stdout
    assert "checked 80 images (16 mismatches, 12 difference images)" in out.stdout, out.stdout
