#!/usr/bin/env bash
# One-time (and idempotent) setup: Node packages, the Python venv for export and reference
# tools, the native addon, the TypeScript build, and a demo bundle when no model is present.
#
#   LIBTORCH_DIR=/opt/libtorch   link the addon against that LibTorch instead of the venv's torch
#   SAM3_CHECKPOINT=weights/sam3 the bundle directory the server loads (see README)
#   SKIP_DEMO_BUNDLE=1           do not create the random-weight demo bundle
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required ($2)" >&2; exit 1; }; }

need node "Node.js 20 or newer"
need python3 "Python 3.10 or newer, for the export tools"
need cmake "CMake 3.18 or newer, for the native addon"
need g++ "a C++17 compiler, for the native addon"
need "${FFMPEG_PATH:-ffmpeg}" "FFmpeg, to decode videos (Debian/Ubuntu: sudo apt-get install ffmpeg)"
need "${FFPROBE_PATH:-ffprobe}" "FFmpeg's ffprobe, to read videos (Debian/Ubuntu: sudo apt-get install ffmpeg)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "setup: Node.js 20 or newer is required (found $(node --version))" >&2; exit 1; }

step "Node packages"
npm ci --no-audit --no-fund

step "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
# --retries 0: fail fast where only local package indexes are reachable.
.venv/bin/pip install --retries 0 -q -r tools/requirements.txt
# The CLIP vocabulary ships in open_clip_torch; its torchvision dependency is not needed.
.venv/bin/pip install --retries 0 -q --no-deps open_clip_torch
# The Python client (clients/python), editable. PIP_RETRIES also reaches the pip that build
# isolation starts to fetch hatchling (which would otherwise retry an unreachable index).
PIP_RETRIES=0 .venv/bin/pip install --retries 0 -q -e clients/python

step "Native addon and TypeScript"
npm run build

bundle="${SAM3_CHECKPOINT:-weights/sam3}"
if [ -f "$bundle/manifest.json" ]; then
  step "Model bundle: $bundle"
elif [ "${SKIP_DEMO_BUNDLE:-0}" = "1" ]; then
  step "No model bundle at $bundle (SKIP_DEMO_BUNDLE=1)"
else
  step "No model bundle at $bundle: creating the RANDOM-WEIGHT demo bundle"
  echo "    Its masks are meaningless. Export real weights with tools/export_sam3.py (see README)."
  .venv/bin/python tools/export_sam3.py --tiny-random --preset demo --seed 0 --out "$bundle"
fi
step "Setup complete"
