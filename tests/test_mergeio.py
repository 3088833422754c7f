"""merge's edges: reading a shard's manifest, paths that must stay inside it, the output folder."""

import os

import pytest

from comfy_cli import mergeio
from comfy_cli.errors import UsageError


def test_a_line_cut_short_at_the_end_is_dropped(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"index": 0}\n\n{"index": 1}\n{"index": 2, "na')
    assert mergeio.read_folder(str(tmp_path)) == [(1, {"index": 0}), (3, {"index": 1})]


def test_a_bad_line_inside_is_refused_naming_it(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"index": 0}\n[1, 2]\n{"index": 1}\n')
    with pytest.raises(UsageError, match=r"manifest.jsonl: line 2 is not a JSON object"):
        mergeio.read_folder(str(tmp_path))


def test_paths_must_stay_inside_the_shard(tmp_path):
    shard = tmp_path / "shard"
    (shard / "sub").mkdir(parents=True)
    (shard / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", shard / "link.png")
    assert mergeio.inside(str(shard), "sub/a.png") == os.path.join(str(shard), "sub", "a.png")
    for bad in ["../secret", "/etc/passwd", "sub/../../secret", "link.png", "sub\\a.png", "", None, 7, "sub",
                "missing.png"]:
        assert mergeio.inside(str(shard), bad) is None, bad


def test_distinct_folders(tmp_path):
    a = str(tmp_path / "a")
    os.mkdir(a)
    assert mergeio.distinct([a, a + "/", os.path.join(str(tmp_path), ".", "a"), str(tmp_path)]) == [a, str(tmp_path)]


def test_the_output_folder_is_not_a_shard_and_keeps_a_merged_manifest(tmp_path):
    shard = tmp_path / "s"
    shard.mkdir()
    with pytest.raises(UsageError, match="is one of the shards"):
        mergeio.prepare(str(shard), [str(shard)], False)
    out = tmp_path / "o"
    mergeio.prepare(str(out), [str(shard)], False)
    assert out.is_dir()
    (out / "manifest.jsonl").write_text("")
    with pytest.raises(UsageError, match="holds a manifest.jsonl already; add --overwrite"):
        mergeio.prepare(str(out), [str(shard)], False)
    mergeio.prepare(str(out), [str(shard)], True)
