"""comfy-cli vs a minimal reference client on a cached workflow.

Starts the simulator in-process, warms its cache with examples/steps.json
(seconds_per_step set to 0 in a temp copy), then alternately times
`comfy-cli run --progress none` and tests/bench/ref_client.py as subprocesses.
Both are served from the cache, so the difference is client overhead
(interpreter start, imports, connection, bookkeeping).

    .venv/bin/python tests/bench/bench_cached.py [--runs N] [--against DIR]

With `--against DIR` (a checkout of another commit, e.g. from `git worktree add /tmp/old OLD`),
that tree's comfy_cli (through PYTHONPATH) is alternated in the same rounds, so the two trees are
compared side by side against the same reference.
"""
import json
import os
import statistics
import sys
import tempfile
import time

from _common import COMFY_CLI, REPO, alternate, header, parse_args, table, timed, tree_env

from comfy_cli.sim import SimServer


def main():
    args = parse_args(__doc__.splitlines()[0], default_runs=15, against=True)
    header("bench_cached: cached workflow, wall time per process", args.runs)
    workflow = json.loads((REPO / "examples" / "steps.json").read_text())
    for node in workflow.values():
        if "seconds_per_step" in node["inputs"]:
            node["inputs"]["seconds_per_step"] = 0
    fd, path = tempfile.mkstemp(prefix="bench-steps-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(workflow, f)
        with SimServer() as sim:
            ref = [sys.executable, str(REPO / "tests" / "bench" / "ref_client.py"), sim.url, path]
            seconds, proc = timed(ref)  # warm the cache
            if proc.returncode != 0:
                sys.exit(f"warm-up failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
            commands = {
                "comfy-cli run": [COMFY_CLI, "run", "--progress", "none", path, "--url", sim.url],
                "ref_client.py": ref,
            }
            envs = {}
            if args.against:
                commands["comfy-cli run (--against)"] = commands["comfy-cli run"]
                envs["comfy-cli run (--against)"] = tree_env(args.against)
            times = alternate(commands, args.runs, envs=envs)
            submitted = len(sim.submissions)
            # comfy-cli exits on the success message; the server may write its history just after
            give_up = time.monotonic() + 5
            while True:
                with sim.engine.history_lock:
                    entries = list(sim.engine.history.values())
                if len(entries) >= submitted or time.monotonic() > give_up:
                    break
                time.sleep(0.01)
    finally:
        os.unlink(path)
    # Timed prompts must have run nothing: every node listed in execution_cached.
    fully_cached = sum(
        1 for entry in entries[1:]
        if any(event == "execution_cached" and set(data["nodes"]) == set(entry["prompt"][2])
               for event, data in entry["status"]["messages"]))
    table(times, "ref_client.py", {"comfy-cli run": "<= 1.25x"})
    if args.against:
        print(f"\n--against {args.against}: this tree / that tree = "
              f"{statistics.median(times['comfy-cli run']) / statistics.median(times['comfy-cli run (--against)']):.2f}x")
    print(f"\nprompts submitted: {submitted} (1 warm-up + {len(commands) * args.runs} timed), all exited 0; {fully_cached} of the timed ones fully cached")


if __name__ == "__main__":
    main()
