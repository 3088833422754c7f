"""The CI and cluster examples: the YAML parses, every comfy-cli command in them uses options that
exist, each engine's one line is there, and the Slurm script runs (with the simulator)."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import typer
import yaml

from comfy_cli import shard
from comfy_cli.cli import app
from test_run_e2e import EXAMPLES

YAML_EXAMPLES = sorted(EXAMPLES.glob("ci/*.yml")) + sorted(EXAMPLES.glob("cluster/*.yaml"))
SCRIPTS = sorted(EXAMPLES.glob("cluster/*.sh")) + sorted(EXAMPLES.glob("*.sh"))
SHELL_END = {"|", "||", "&&", ";", ">", ">>", "2>", "<", "&", "2>&1"}


def strings(node):
    """Every string in a loaded YAML document (scripts, args, env values)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def invocations(text):
    """[(command, [arguments])] for every `comfy-cli COMMAND ...` in shell text (lines joined
    where they end in a backslash; stopped at a pipe, redirection or the end of the command)."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        for match in re.finditer(r"(?:^|&&|\|\||;|\||\$\(|\bdo\b|\bthen\b)\s*comfy-cli\s+(.*)", line):
            words = shlex.split(match.group(1), posix=True)
            args = []
            for word in words:
                if word in SHELL_END or word.startswith(">"):
                    break
                args.append(word)
            if args and not args[0].startswith("-"):
                found.append((args[0], args[1:]))
    return found


def options_of(command):
    group = typer.main.get_command(app)
    assert command in group.commands, f"comfy-cli has no command {command!r}"
    names = set()
    for param in group.commands[command].params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def example_texts():
    for path in YAML_EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            yield path, "\n".join(strings(doc))
    for path in SCRIPTS:
        yield path, path.read_text()


@pytest.mark.parametrize("path", YAML_EXAMPLES, ids=lambda p: p.name)
def test_yaml_examples_parse(path):
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_every_example_calls_the_cli_with_options_that_exist():
    seen = set()
    for path, text in example_texts():
        for command, args in invocations(text):
            known = options_of(command)
            for arg in args:
                if arg.startswith("-") and arg != "-":
                    assert arg.split("=", 1)[0] in known, f"{path.name}: comfy-cli {command} has no option {arg}"
            seen.add((path.name, command))
    names = {name for name, _ in seen}
    for wanted in ("gitlab-parallel.yml", "k8s-indexed-job.yaml", "slurm-array.sh"):
        assert wanted in names, f"no comfy-cli command found in {wanted}"


def shard_lines(path):
    """The lines running a comfy-cli command with --shard auto."""
    return [line for line in path.read_text().splitlines() if "comfy-cli" in line and "--shard auto" in line]


def test_each_engine_example_runs_its_slice_with_shard_auto():
    for name in ("ci/gitlab-parallel.yml", "cluster/k8s-indexed-job.yaml", "cluster/slurm-array.sh"):
        assert shard_lines(EXAMPLES / name), name
    gitlab = yaml.safe_load((EXAMPLES / "ci/gitlab-parallel.yml").read_text())
    assert isinstance(gitlab["render"]["parallel"], int) and gitlab["render"]["parallel"] > 1
    job = yaml.safe_load((EXAMPLES / "cluster/k8s-indexed-job.yaml").read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    env = {e["name"]: e["value"] for c in spec["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert env["COMFY_SHARD_COUNT"] == str(spec["completions"])  # the count --shard auto takes on Kubernetes
    script = (EXAMPLES / "cluster/slurm-array.sh").read_text()
    low, high = map(int, re.search(r"^#SBATCH --array=(\d+)-(\d+)$", script, re.M).groups())
    found = shard.from_env({"SLURM_ARRAY_TASK_ID": str(high), "SLURM_ARRAY_TASK_MIN": str(low),
                            "SLURM_ARRAY_TASK_MAX": str(high), "SLURM_ARRAY_TASK_COUNT": str(high - low + 1)})
    assert (found.k, found.n) == (high - low + 1, high - low + 1)


def yaml_commands(name):
    return [command for _, text in example_texts() if _.name == name for command, _args in invocations(text)]


def test_each_engine_example_merges_its_shards():
    for name in ("github-shards.yml", "gitlab-parallel.yml", "slurm-merge.sh", "k8s-merge-job.yaml"):
        assert "merge" in yaml_commands(name), name
    gh = yaml.safe_load((EXAMPLES / "ci/github-shards.yml").read_text())
    shards = gh["jobs"]["shard"]
    ks = shards["strategy"]["matrix"]["k"]
    step = next(s for s in shards["steps"] if "COMFY_SHARD" in (s.get("env") or {}))
    assert step["env"]["COMFY_SHARD"] == "${{ matrix.k }}/%d" % len(ks)  # N = the matrix's size
    assert "--shard auto" in step["run"]
    assert gh["jobs"]["merge"]["needs"] == "shard" and gh["jobs"]["merge"]["if"] == "always()"
    gitlab = yaml.safe_load((EXAMPLES / "ci/gitlab-parallel.yml").read_text())
    assert gitlab["merge"]["needs"] == ["render"] and gitlab["merge"]["when"] == "always"


def test_the_slurm_scripts_run_each_task_s_slice_then_merge(tmp_path):
    """Two array tasks of the script, as Slurm would start them (with the simulator): together they
    make the whole batch, each in its own folder; the merge script puts them back together."""
    out = tmp_path / "out"
    base = {var: "" for var in shard.VARIABLES}
    base.update(SIMULATE="1", COUNT="5", OUT=str(out), WORKFLOW=str(EXAMPLES / "steps.json"),
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    for task in (1, 2):
        env = dict(os.environ, **dict(base, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN="1",
                                      SLURM_ARRAY_TASK_MAX="2", SLURM_ARRAY_TASK_COUNT="2"))
        env.pop("COMFY_URL", None)
        proc = subprocess.run(["bash", str(EXAMPLES / "cluster/slurm-array.sh"), "--set",
                               "Sampler.seconds_per_step=0.01"], env=env, capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, proc.stderr
        assert f"comfy-cli: shard {task}/2 (from Slurm SLURM_ARRAY_TASK_ID={task} of 2" in proc.stderr
    images = {task: sorted(p.name for p in (out / f"shard-{task}").rglob("*.png")) for task in (1, 2)}
    assert (len(images[1]), len(images[2])) == (3, 2)
    for task in (1, 2):
        assert 'tests="%d"' % len(images[task]) in (out / f"junit-{task}.xml").read_text()
    env = dict(os.environ, **base)
    proc = subprocess.run(["bash", str(EXAMPLES / "cluster/slurm-merge.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    merged = [json.loads(line) for line in (out / "merged" / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in merged] == [f"steps#{i}" for i in range(1, 6)]
    assert 'tests="5"' in (out / "merged" / "junit.xml").read_text()
    assert (out / "merged" / "report.html").is_file()
