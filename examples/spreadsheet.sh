#!/usr/bin/env bash
# One image per row of a spreadsheet of prompts (examples/prompts.csv: name, prompt, seed, cfg,
# file prefix), checked first, then run as one batch.
#
#   examples/spreadsheet.sh [PROMPTS.csv] [extra comfy-cli options...]
#   OUT=renders COMFY_URL=http://gpu-box:8188 examples/spreadsheet.sh my-prompts.csv
#   SIMULATE=1 examples/spreadsheet.sh          # no ComfyUI needed: the built-in simulator
#
# stdout: one line per row, its name and its saved file; the --json summary goes to OUT.json.
set -euo pipefail
here=$(dirname "$0")
prompts=${1:-$here/prompts.csv}
shift || true
out=${OUT:-spreadsheet-out}
target=()
if [ -n "${SIMULATE:-}" ]; then target=(--simulate); fi

# Every row checked against the server's /object_info; nothing is sent. Exit 2 names the bad cell.
comfy-cli run "$here/txt2img.json" --params "$prompts" --dry-run "${target[@]}" "$@" > /dev/null
comfy-cli run "$here/txt2img.json" --params "$prompts" --output-dir "$out" --json "${target[@]}" "$@" \
    > "$out.json"
python3 -c 'import json, sys
for p in json.load(open(sys.argv[1]))["prompts"]:
    print(p["name"], *[o.get("path") or o.get("url") for o in p["outputs"]], sep="\t")' "$out.json"
