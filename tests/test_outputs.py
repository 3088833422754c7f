"""--output-dir's files on a real filesystem: temporary files of killed runs are swept, nothing
else is touched."""

import os
import subprocess
import sys

from comfy_cli import outputs


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_machine_tag_is_the_host_name_and_pid_namespace_hashed():
    assert len(outputs._HOST) == 12 and outputs._TEMP.match(f".comfy-cli-{outputs._HOST}-1-x.part")
    assert outputs._gone(2 ** 70) is False and outputs._gone(dead_pid()) is True


def temp_name(pid, host=None):
    return f".comfy-cli-{host or outputs._HOST}-{pid}-abc123.part"


def test_sweep_removes_only_dead_runs_temporary_files_from_this_host(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dead = dead_pid()
        keep = [temp_name(alive.pid), temp_name(os.getpid()), temp_name(dead, host="0123456789ab"),
                temp_name(99999999999), temp_name(2 ** 70), ".comfy-cli-old.part", "image.png",
                f"{temp_name(dead)}.png", "notes.part"]
        for name in keep + [temp_name(dead)]:
            (tmp_path / name).write_bytes(b"x")
        outputs.sweep(str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == sorted(keep)
    finally:
        alive.stdin.close()
        alive.wait()


def test_sweep_of_a_missing_folder_is_quiet(tmp_path):
    outputs.sweep(str(tmp_path / "nope"))


def test_the_first_save_into_a_folder_sweeps_it(tmp_path):
    sub = tmp_path / "out" / "faces"
    sub.mkdir(parents=True)
    leftover = sub / temp_name(dead_pid())
    leftover.write_bytes(b"half a png")
    folder = outputs.OutputDir(str(tmp_path / "out"))
    seen = []

    def write(fh):
        seen.extend(n for n in os.listdir(sub) if n.endswith(".part"))  # our own temporary file
        fh.write(b"png")

    path = folder.save({"filename": "a.png", "subfolder": "faces"}, write)
    assert path == str(sub / "a.png") and (sub / "a.png").read_bytes() == b"png"
    assert not leftover.exists()
    assert len(seen) == 1 and seen[0].startswith(f".comfy-cli-{outputs._HOST}-{os.getpid()}-")
    assert sorted(os.listdir(sub)) == ["a.png"]
