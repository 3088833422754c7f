#!/usr/bin/env bash
# Sweep the seeds of one workflow, download every image, and write a manifest.
#
#   examples/sweep.sh [WORKFLOW] [extra comfy-cli options...]
#   COUNT=8 OUT=sweep-out COMFY_URL=http://gpu-box:8188 examples/sweep.sh examples/txt2img.json
#   SIMULATE=1 examples/sweep.sh            # no ComfyUI needed: the built-in simulator
#
# comfy-cli prints one local path per line on stdout (progress goes to stderr), so the
# loop below sees each image as soon as it is saved. The script exits with comfy-cli's code.
set -uo pipefail

workflow=${1:-examples/steps.json}
shift || true
count=${COUNT:-8}
out=${OUT:-sweep-out}
target=()
if [ -n "${SIMULATE:-}" ]; then target=(--simulate); fi

mkdir -p "$out"
manifest="$out/manifest.tsv"
printf 'index\tsha256\tbytes\tpath\n' > "$manifest"

i=0
comfy-cli run "$workflow" --count "$count" --output-dir "$out" --progress lines "${target[@]}" "$@" |
while IFS= read -r path; do
    i=$((i + 1))
    sum=$(sha256sum "$path" | cut -d' ' -f1)
    size=$(wc -c < "$path")
    printf '%s\t%s\t%s\t%s\n' "$i" "$sum" "$size" "$path" >> "$manifest"
    echo "saved $path" >&2
done
status=${PIPESTATUS[0]}

echo "manifest: $manifest ($(($(wc -l < "$manifest") - 1)) files), comfy-cli exit code $status" >&2
exit "$status"
