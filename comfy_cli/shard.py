"""--shard: which slice of the batch this job runs, given as K/N or, with `--shard auto`, read
from the environment of the engine running the job (a CI matrix, a Slurm array, a Kubernetes
Indexed Job). Pure: the environment is passed in as a mapping; nothing here reads or prints.

Item i of the batch (0-based, in the batch's one order) belongs to slice K of N when
i mod N == K - 1, so N jobs cover the batch with no overlap and no gap.
"""

from typing import NamedTuple, Optional

from comfy_cli.errors import UsageError

# The one variable COMFY_SHARD=K/N, for an engine with no variables of its own (a GitHub
# Actions matrix) or to say it by hand.
OWN = "COMFY_SHARD"


class Slice(NamedTuple):
    k: int  # 1-based
    n: int
    source: Optional[str] = None  # where `auto` found it, e.g. "GitLab CI_NODE_INDEX=3 CI_NODE_TOTAL=8"

    def text(self):
        return f"{self.k}/{self.n}"


def parse(spec, env):
    """The --shard value (None, 'K/N' or 'auto') -> a Slice or None. UsageError if it is wrong."""
    if spec is None:
        return None
    if spec.strip().lower() == "auto":
        return from_env(env)
    found = k_of_n(spec)
    if found is None:
        raise UsageError(f"--shard {spec}: expected K/N with 1 <= K <= N, e.g. 2/4, or auto")
    return Slice(found[0], found[1])


def from_env(env):
    """The slice the engine's variables in `env` name. Every engine found must agree."""
    found = [s for s in (engine(env) for engine in ENGINES) if s is not None]
    if not found:
        raise UsageError("--shard auto: no CI or cluster engine in the environment (looked for " + ", ".join(
            f"{name} {var}" for name, var in LOOKED_FOR) + f"); set {OWN}=K/N or give --shard K/N")
    first = found[0]
    for other in found[1:]:
        if other[:2] != first[:2]:
            raise UsageError(f"--shard auto: {first.source} says {first.text()} but {other.source} says "
                             f"{other.text()}; unset one, or give --shard K/N")
    return Slice(first.k, first.n, " and ".join(s.source for s in found))


def indices(total, k, n):
    """The global indices (0-based) of slice k of n in a batch of `total` items."""
    return range(k - 1, total, n)


def k_of_n(text):
    k, slash, n = text.partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        return None
    if not slash or n < 1 or not 1 <= k <= n:
        return None
    return k, n


def _get(env, name):
    value = env.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _int(env, engine, name):
    value = _get(env, name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--shard auto: {engine}: {name}={env.get(name)!r} is not a whole number") from None


def _indexed(env, engine, index_var, total_var, base, hint=""):
    """An engine with an index (`base`-based) and a total: None if its index is not set."""
    if _get(env, index_var) is None:
        return None
    index = _int(env, engine, index_var)
    if _get(env, total_var) is None:
        raise UsageError(f"--shard auto: {engine}: {index_var} is set but not {total_var}" + (f"; {hint}" if hint
                                                                                              else ""))
    total = _int(env, engine, total_var)
    if total < 1:
        raise UsageError(f"--shard auto: {engine}: {total_var}={total} must be at least 1")
    if not base <= index < base + total:
        raise UsageError(f"--shard auto: {engine}: {index_var}={index} is out of range {base}..{base + total - 1} "
                         f"({total_var}={total}, {base}-based)")
    return Slice(index - base + 1, total, f"{engine} {index_var}={index} {total_var}={total}")


def _gitlab(env):
    return _indexed(env, "GitLab", "CI_NODE_INDEX", "CI_NODE_TOTAL", 1)


def _circleci(env):
    return _indexed(env, "CircleCI", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0)


def _buildkite(env):
    return _indexed(env, "Buildkite", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0)


def _kubernetes(env):
    # An Indexed Job tells each pod its index but not the number of completions: the manifest
    # passes that on as COMFY_SHARD_COUNT.
    return _indexed(env, "Kubernetes", "JOB_COMPLETION_INDEX", "COMFY_SHARD_COUNT", 0,
                    "set COMFY_SHARD_COUNT to the Job's completions in its manifest")


def _slurm(env):
    """A job array: task ids MIN, MIN+STEP, ... (a range, with an optional step) -> slices 1..N."""
    engine, var = "Slurm", "SLURM_ARRAY_TASK_ID"
    if _get(env, var) is None:
        return None
    task = _int(env, engine, var)
    low = _int(env, engine, "SLURM_ARRAY_TASK_MIN") if _get(env, "SLURM_ARRAY_TASK_MIN") is not None else 0
    step = _int(env, engine, "SLURM_ARRAY_TASK_STEP") if _get(env, "SLURM_ARRAY_TASK_STEP") is not None else 1
    if step < 1:
        raise UsageError(f"--shard auto: Slurm: SLURM_ARRAY_TASK_STEP={step} must be at least 1")
    count = _int(env, engine, "SLURM_ARRAY_TASK_COUNT") if _get(env, "SLURM_ARRAY_TASK_COUNT") is not None else None
    span = None
    if _get(env, "SLURM_ARRAY_TASK_MAX") is not None:
        high = _int(env, engine, "SLURM_ARRAY_TASK_MAX")
        span = (high - low) // step + 1 if high >= low else 0
    if count is None and span is None:
        raise UsageError("--shard auto: Slurm: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_MAX nor "
                         "SLURM_ARRAY_TASK_COUNT")
    if count is not None and span is not None and count != span:
        raise UsageError(f"--shard auto: Slurm: the array is not one range ({count} tasks between "
                         f"SLURM_ARRAY_TASK_MIN={low} and SLURM_ARRAY_TASK_MAX={high}); submit it as "
                         f"--array=0-{count - 1}, or set {OWN}=K/N")
    n = count if count is not None else span
    if n < 1:
        raise UsageError("--shard auto: Slurm: the array has no tasks (SLURM_ARRAY_TASK_COUNT or "
                         "SLURM_ARRAY_TASK_MIN..MAX)")
    place, off = divmod(task - low, step)
    if off or not 0 <= place < n:
        raise UsageError(f"--shard auto: Slurm: {var}={task} is out of range: the array's {n} tasks are "
                         f"{low}..{low + (n - 1) * step}" + (f" step {step}" if step > 1 else ""))
    return Slice(place + 1, n, f"Slurm {var}={task} of {n} (SLURM_ARRAY_TASK_MIN={low})")


def _own(env):
    value = _get(env, OWN)
    if value is None:
        return None
    found = k_of_n(value)
    if found is None:
        raise UsageError(f"--shard auto: {OWN}={env.get(OWN)!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return Slice(found[0], found[1], f"{OWN}={value}")


ENGINES = (_gitlab, _circleci, _buildkite, _slurm, _kubernetes, _own)
LOOKED_FOR = (("GitLab", "CI_NODE_INDEX"), ("CircleCI", "CIRCLE_NODE_INDEX"), ("Buildkite", "BUILDKITE_PARALLEL_JOB"),
              ("Slurm", "SLURM_ARRAY_TASK_ID"), ("Kubernetes", "JOB_COMPLETION_INDEX"), ("or", OWN))
# Every variable read here (tests clear them, so the machine running them does not leak in).
VARIABLES = ("CI_NODE_INDEX", "CI_NODE_TOTAL", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", "BUILDKITE_PARALLEL_JOB",
             "BUILDKITE_PARALLEL_JOB_COUNT", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
             "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "COMFY_SHARD_COUNT", OWN)
