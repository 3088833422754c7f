#!/usr/bin/env bash
# Slurm: after the array of examples/cluster/slurm-array.sh, its shards back into one batch.
#
#   array=$(sbatch --parsable examples/cluster/slurm-array.sh)
#   sbatch --dependency=afterany:"$array" examples/cluster/slurm-merge.sh
#   OUT=sweep-out examples/cluster/slurm-merge.sh     # or by hand, once the array is done
#
#SBATCH --job-name=comfy-merge
#SBATCH --time=00:20:00
#SBATCH --output=comfy-merge-%j.log
# (afterany: merge even when a task failed; a missing slice is named and the exit code is 4)
set -uo pipefail

out=${OUT:-sweep-out}

# THE line: every task's folder into one manifest, JUnit and HTML report, exit code as one run's
comfy-cli merge "$out"/shard-* --output-dir "$out/merged" --report "$out/merged/report.html" \
    --junit "$out/merged/junit.xml" "$@"
