"""--shard K/N and --shard auto: every engine's variables and every error (pure), then end to end."""

import json
import re

import pytest

from comfy_cli import shard
from comfy_cli.errors import UsageError
from test_run_e2e import cli, workflow


def auto(**env):
    return shard.parse("auto", env)


@pytest.mark.parametrize("env, k, n, source", [
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"}, 1, 4, "GitLab CI_NODE_INDEX=1 CI_NODE_TOTAL=4"),
    ({"CI_NODE_INDEX": "4", "CI_NODE_TOTAL": "4"}, 4, 4, "GitLab"),
    ({"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "3"}, 1, 3, "CircleCI CIRCLE_NODE_INDEX=0 CIRCLE_NODE_TOTAL=3"),
    ({"CIRCLE_NODE_INDEX": "2", "CIRCLE_NODE_TOTAL": "3"}, 3, 3, "CircleCI"),
    ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, 1, 5, "Buildkite"),
    ({"BUILDKITE_PARALLEL_JOB": "4", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, 5, 5, "BUILDKITE_PARALLEL_JOB=4"),
    ({"JOB_COMPLETION_INDEX": "0", "COMFY_SHARD_COUNT": "8"}, 1, 8, "Kubernetes JOB_COMPLETION_INDEX=0"),
    ({"JOB_COMPLETION_INDEX": "7", "COMFY_SHARD_COUNT": "8"}, 8, 8, "COMFY_SHARD_COUNT=8"),
    ({"COMFY_SHARD": "3/8"}, 3, 8, "COMFY_SHARD=3/8"),
    ({"COMFY_SHARD": " 1/1 "}, 1, 1, "COMFY_SHARD=1/1"),
    # Slurm: --array=0-7 (MIN/MAX/COUNT as sbatch sets them), 1-based arrays, COUNT or MAX alone, steps
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7",
      "SLURM_ARRAY_TASK_COUNT": "8"}, 1, 8, "Slurm SLURM_ARRAY_TASK_ID=0"),
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"}, 8, 8, "Slurm"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, 3, 4, "Slurm"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, 4, 4, "Slurm"),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MAX": "5"}, 3, 6, "Slurm"),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "12",
      "SLURM_ARRAY_TASK_STEP": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, 4, 4, "Slurm"),
])
def test_each_engine_names_its_slice(env, k, n, source):
    found = auto(**env)
    assert (found.k, found.n) == (k, n)
    assert source in found.source


def test_engines_that_agree_are_all_named():
    found = auto(CI_NODE_INDEX="2", CI_NODE_TOTAL="4", COMFY_SHARD="2/4")
    assert (found.k, found.n) == (2, 4)
    assert "GitLab" in found.source and "COMFY_SHARD=2/4" in found.source


def test_empty_variables_count_as_unset():
    found = auto(CI_NODE_INDEX="", CI_NODE_TOTAL="", BUILDKITE_PARALLEL_JOB=" ", COMFY_SHARD="1/2")
    assert (found.k, found.n) == (1, 2)


@pytest.mark.parametrize("env, message", [
    ({}, "no CI or cluster engine in the environment"),
    ({"CI_NODE_TOTAL": "1"}, "no CI or cluster engine"),  # GitLab without `parallel:` sets only the total
    ({"SLURM_JOB_ID": "77"}, "no CI or cluster engine"),  # a Slurm job that is not an array
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4", "COMFY_SHARD": "3/4"},
     "GitLab CI_NODE_INDEX=2 CI_NODE_TOTAL=4 says 2/4 but COMFY_SHARD=3/4 says 3/4"),
    ({"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "2", "BUILDKITE_PARALLEL_JOB": "0",
      "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, "says 1/2 but Buildkite"),
    ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "4"}, "GitLab: CI_NODE_INDEX=0 is out of range 1..4"),
    ({"CI_NODE_INDEX": "5", "CI_NODE_TOTAL": "4"}, "CI_NODE_INDEX=5 is out of range 1..4"),
    ({"CIRCLE_NODE_INDEX": "3", "CIRCLE_NODE_TOTAL": "3"}, "CircleCI: CIRCLE_NODE_INDEX=3 is out of range 0..2"),
    ({"BUILDKITE_PARALLEL_JOB": "-1", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, "BUILDKITE_PARALLEL_JOB=-1 is out of"),
    ({"JOB_COMPLETION_INDEX": "8", "COMFY_SHARD_COUNT": "8"}, "JOB_COMPLETION_INDEX=8 is out of range 0..7"),
    ({"JOB_COMPLETION_INDEX": "0"}, "JOB_COMPLETION_INDEX is set but not COMFY_SHARD_COUNT; set COMFY_SHARD_COUNT"),
    ({"CI_NODE_INDEX": "1"}, "CI_NODE_INDEX is set but not CI_NODE_TOTAL"),
    ({"CI_NODE_INDEX": "one", "CI_NODE_TOTAL": "4"}, "GitLab: CI_NODE_INDEX='one' is not a whole number"),
    ({"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "0"}, "CIRCLE_NODE_TOTAL=0 must be at least 1"),
    ({"COMFY_SHARD": "5/4"}, "COMFY_SHARD='5/4': expected K/N"),
    ({"COMFY_SHARD": "2"}, "COMFY_SHARD='2': expected K/N"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "neither SLURM_ARRAY_TASK_MAX nor SLURM_ARRAY_TASK_COUNT"),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"},
     "SLURM_ARRAY_TASK_ID=9 is out of range: the array's 8 tasks are 1..8"),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}, "out of range"),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
      "SLURM_ARRAY_TASK_STEP": "4"}, "SLURM_ARRAY_TASK_ID=2 is out of range: the array's 3 tasks are 0..8 step 4"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
      "SLURM_ARRAY_TASK_COUNT": "3"}, "the array is not one range (3 tasks between"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4",
      "SLURM_ARRAY_TASK_STEP": "0"}, "SLURM_ARRAY_TASK_STEP=0 must be at least 1"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "Slurm: SLURM_ARRAY_TASK_ID='x' is not a whole"),
])
def test_auto_errors_are_one_line(env, message):
    with pytest.raises(UsageError) as caught:
        auto(**env)
    text = str(caught.value)
    assert message in text
    assert text.startswith("--shard auto: ") and "\n" not in text
    assert caught.value.exit_code == 2


def test_the_no_engine_error_names_every_variable_looked_for():
    with pytest.raises(UsageError) as caught:
        auto()
    for var in ("CI_NODE_INDEX", "CIRCLE_NODE_INDEX", "BUILDKITE_PARALLEL_JOB", "SLURM_ARRAY_TASK_ID",
                "JOB_COMPLETION_INDEX", "COMFY_SHARD"):
        assert var in str(caught.value)


@pytest.mark.parametrize("spec, k, n", [("1/1", 1, 1), ("2/4", 2, 4), ("4/4", 4, 4), ("AUTO", 3, 5)])
def test_explicit_and_auto_specs(spec, k, n):
    found = shard.parse(spec, {"COMFY_SHARD": "3/5"})
    assert (found.k, found.n) == (k, n)
    assert (found.source is None) == (spec != "AUTO")


@pytest.mark.parametrize("spec", ["0/4", "5/4", "x", "2", "1/0", "/", "a/b", ""])
def test_bad_explicit_specs(spec):
    with pytest.raises(UsageError, match=r"--shard .*: expected K/N with 1 <= K <= N, e.g. 2/4, or auto"):
        shard.parse(spec, {})


def test_none_is_no_shard():
    assert shard.parse(None, {"COMFY_SHARD": "1/2"}) is None


@pytest.mark.parametrize("total, n", [(0, 3), (1, 3), (7, 3), (10, 1), (12, 4), (5, 8)])
def test_slices_cover_a_batch_with_no_overlap_and_no_gap(total, n):
    slices = [list(shard.indices(total, k, n)) for k in range(1, n + 1)]
    assert sorted(i for s in slices for i in s) == list(range(total))
    for k, s in enumerate(slices, 1):
        assert all(i % n == k - 1 for i in s)


# ---- end to end: the CLI reads the engine's variables ------------------------------------------

def clean_env(**env):
    """Every engine variable cleared (the machine running the tests may be a CI job), then `env`."""
    out = {var: "" for var in shard.VARIABLES}
    out.update(env)
    return out


def test_run_shard_auto_takes_the_slice_the_engine_names(tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    names = []
    for index in (1, 2, 3):
        proc = cli("run", path, "--count", "7", "--shard", "auto", "--simulate", "--json", timeout=60,
                   env=clean_env(CI_NODE_INDEX=str(index), CI_NODE_TOTAL="3"))
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        got = [p["name"] for p in doc["prompts"]]
        assert got == [f"steps#{i}" for i in range(index, 8, 3)]
        said = [line for line in proc.stderr.splitlines() if "shard" in line]
        assert said == [f"comfy-cli: shard {index}/3 (from GitLab CI_NODE_INDEX={index} CI_NODE_TOTAL=3)"]
        names += got
    assert sorted(names) == sorted(f"steps#{i}" for i in range(1, 8))


def test_run_shard_auto_on_kubernetes_and_slurm(tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    for env, want in [(clean_env(JOB_COMPLETION_INDEX="1", COMFY_SHARD_COUNT="2"), ["steps#2", "steps#4"]),
                      (clean_env(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="2",
                                 SLURM_ARRAY_TASK_COUNT="2"), ["steps#1", "steps#3"])]:
        proc = cli("run", path, "--count", "4", "--shard", "auto", "--simulate", "--json", timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        assert [p["name"] for p in json.loads(proc.stdout)["prompts"]] == want


@pytest.mark.parametrize("env, message", [
    ({}, "comfy-cli: error: --shard auto: no CI or cluster engine in the environment"),
    ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2"}, "--shard auto: GitLab: CI_NODE_INDEX=0 is out of range 1..2"),
    ({"COMFY_SHARD": "1/2", "CIRCLE_NODE_INDEX": "1", "CIRCLE_NODE_TOTAL": "2"}, "says 2/2 but COMFY_SHARD=1/2"),
])
@pytest.mark.parametrize("command", ["run", "submit"])
def test_shard_auto_errors_exit_2_before_anything_is_sent(sim, tmp_path, env, message, command):
    path = workflow(tmp_path, "steps")
    proc = cli(command, path, "--shard", "auto", "--url", sim.url, env=clean_env(**env))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("comfy-cli: error: --shard auto: "), proc.stderr
    assert message in lines[0]
    assert sim.submissions == []


def test_submit_shard_auto_submits_only_its_slice(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    proc = cli("submit", path, "--count", "5", "--shard", "auto", "--url", sim.url, "--json",
               env=clean_env(BUILDKITE_PARALLEL_JOB="1", BUILDKITE_PARALLEL_JOB_COUNT="2"))
    assert proc.returncode == 0, proc.stderr
    assert "comfy-cli: shard 2/2 (from Buildkite BUILDKITE_PARALLEL_JOB=1 BUILDKITE_PARALLEL_JOB_COUNT=2)" \
        in proc.stderr
    assert [p["name"] for p in json.loads(proc.stdout)["prompts"]] == ["steps#2", "steps#4"]
    assert len(sim.submissions) == 2


def test_the_test_environment_is_cleared_of_every_variable_read():
    # If shard.py reads a variable VARIABLES does not list, a CI machine could change these tests.
    source = open(shard.__file__, encoding="utf-8").read()
    read = set(re.findall(r'"((?:CI|CIRCLE|BUILDKITE|SLURM|JOB|COMFY)_[A-Z_]+)"', source))
    assert read and read <= set(shard.VARIABLES), read - set(shard.VARIABLES)


def test_a_journal_remembers_the_resolved_slice_not_the_word_auto(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    journal = str(tmp_path / "batch.journal")
    args = ("run", path, "--count", "4", "--shard", "auto", "--url", sim.url, "--journal", journal)
    first = cli(*args, timeout=60, env=clean_env(COMFY_SHARD="1/2"))
    assert first.returncode == 0, first.stderr
    again = cli(*args, timeout=60, env=clean_env(COMFY_SHARD="1/2"))
    assert again.returncode == 0, again.stderr
    assert len(sim.submissions) == 2  # taken up: nothing ran twice
    other = cli(*args, timeout=60, env=clean_env(COMFY_SHARD="2/2"))
    assert other.returncode == 2 and "it records another batch" in other.stderr, other.stderr
