#!/usr/bin/env bash
# Every image in a folder through an upscaler (examples/upscale.json: Load Image -> Upscale Image
# (using Model) -> Save Image): one prompt per file, sorted by name, each file uploaded once.
#
#   examples/upscale-folder.sh [FOLDER or 'GLOB'] [extra comfy-cli options...]
#   OUT=big COMFY_URL=http://gpu-box:8188 examples/upscale-folder.sh ~/photos --retry 1
#   SIMULATE=1 examples/upscale-folder.sh      # no ComfyUI needed: the built-in simulator
set -euo pipefail
here=$(dirname "$0")
photos=${1:-$here/photos}
shift || true
out=${OUT:-upscaled}
target=()
if [ -n "${SIMULATE:-}" ]; then target=(--simulate); fi

comfy-cli run "$here/upscale.json" --input "LoadImage.image=$photos" --output-dir "$out" --progress lines \
    "${target[@]}" "$@"
