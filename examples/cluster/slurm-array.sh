#!/usr/bin/env bash
# Slurm: one batch split over the 8 tasks of a job array, each with one GPU and its own ComfyUI.
#
#   sbatch examples/cluster/slurm-array.sh
#   SIMULATE=1 SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=8 examples/cluster/slurm-array.sh   # try one task here
#
#SBATCH --job-name=comfy-sweep
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --time=02:00:00
#SBATCH --output=comfy-sweep-%A_%a.log
# (--array=0-7: Slurm sets SLURM_ARRAY_TASK_ID 0..7 and _MIN/_MAX/_COUNT; comfy-cli maps them to 1/8..8/8)
set -uo pipefail

workflow=${WORKFLOW:-examples/steps.json}
out=${OUT:-sweep-out}
target=()
if [ -n "${SIMULATE:-}" ]; then
    target=(--simulate)  # no ComfyUI needed: the built-in simulator
else
    # this task's own ComfyUI on the GPU Slurm gave it, on a port no other task on the node uses
    port=$((8188 + SLURM_ARRAY_TASK_ID % 1000))
    python "${COMFYUI_DIR:-$HOME/ComfyUI}/main.py" --listen 127.0.0.1 --port "$port" > "comfyui-$SLURM_ARRAY_TASK_ID.log" 2>&1 &
    server=$!
    trap 'kill "$server"' EXIT
    export COMFY_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 120); do comfy-cli status > /dev/null 2>&1 && break; sleep 5; done
fi

mkdir -p "$out"
# THE line: --shard auto reads SLURM_ARRAY_TASK_ID (and _MIN/_MAX/_COUNT): each task runs only its slice
comfy-cli run "$workflow" --count "${COUNT:-64}" --shard auto --output-dir "$out/shard-$SLURM_ARRAY_TASK_ID" \
    --junit "$out/junit-$SLURM_ARRAY_TASK_ID.xml" --progress lines "${target[@]}" "$@" > /dev/null
