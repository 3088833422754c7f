#!/usr/bin/env bash
# A cfg x steps grid of one prompt (3 x 2 = 6 images), each file joined to the values that made it, and
# OUT.html: a report with the images laid out by cfg (rows) and steps (columns), rewritten as the batch runs.
#
#   examples/grid.sh [extra comfy-cli options...]
#   OUT=grid COMFY_URL=http://gpu-box:8188 examples/grid.sh --set 'Positive prompt.text=a red fox'
#   SIMULATE=1 examples/grid.sh                 # no ComfyUI needed: the built-in simulator
#
# The names say which cell is which: txt2img[cfg=4,steps=20], txt2img[cfg=4,steps=30], ...; OUT/manifest.jsonl
# has a line per cell with its values ({"KSampler.cfg": 4, "KSampler.steps": 20}) and its file.
set -euo pipefail
here=$(dirname "$0")
out=${OUT:-grid}
target=()
if [ -n "${SIMULATE:-}" ]; then target=(--simulate); fi

comfy-cli run "$here/txt2img.json" --sweep KSampler.cfg=4..8:2 --sweep KSampler.steps=20,30 \
    --output-dir "$out" --report "$out.html" --json "${target[@]}" "$@" > "$out.json"
# name -> file, one line per cell
python3 -c 'import json, sys
for p in json.load(open(sys.argv[1]))["prompts"]:
    print(p["name"], *[o.get("path") or o.get("url") for o in p["outputs"]], sep="\t")' "$out.json"
