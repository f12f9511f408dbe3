#!/usr/bin/env bash
# The GPU check, for a session lent a CUDA machine (python3 with CUDA torch, transformers,
# torchvision, scikit-image, cmake, ninja; no Node, no network). Run from the repository root, e.g.
#   device run: bash bench/gpu/run.sh   (carry: the CLIP vocabulary, see VOCAB below)
# It builds the native core and its CLI against the machine's torch, exports a full-size
# random-weight bundle traced on CUDA (and its bf16 export, vision trunk also compiled), checks the pure-torch ROI align
# against torchvision, and benchmarks the core (fp32 and bf16) against the transformers
# reference (fp32) on the same device, printing per-stage times, batched throughput, the bf16
# bundle's accuracy against fp32, and tracking fps. Results go to $OUT (or /tmp/sam3-gpu) as well.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/sam3-gpu}"
mkdir -p "$OUT"
DEVICE="${DEVICE:-cuda:0}"
VOCAB="${VOCAB:-.venv/lib/python3.11/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz}"
PYTHON="${PYTHON:-python3}"
PRESET="${PRESET:-full}"   # a dry run on a CPU: DEVICE=cpu PRESET=tiny ITERS=1
ITERS="${ITERS:-5}"
# CI's dry run reuses what the main build made: CLI=build/Release/sam3_core_cli, BUNDLE=<dir>.
CLI="${CLI:-}"
BUNDLE="${BUNDLE:-}"
log() { printf '\n== %s\n' "$*" | tee -a "$OUT/summary.txt"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee -a "$OUT/summary.txt" || true
"$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' | tee -a "$OUT/summary.txt"

if [ -z "$CLI" ]; then
  log "build the core and its CLI (no Node)"
  LIBTORCH_DIR="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    cmake -S . -B build-gpu -G Ninja -DSAM3_BUILD_ADDON=OFF -DSAM3_COMPILE_JOBS=8 > "$OUT/cmake.log" 2>&1
  cmake --build build-gpu > "$OUT/build.log" 2>&1 || { tail -n 40 "$OUT/build.log"; exit 1; }
  CLI=build-gpu/Release/sam3_core_cli
fi

log "ROI align against torchvision"
"$PYTHON" -m pytest -q tools/tests/test_roi_align.py 2>&1 | tail -n 3 | tee -a "$OUT/summary.txt" || true

if [ -z "$BUNDLE" ]; then
  log "export a random '$PRESET' bundle traced on $DEVICE"
  BUNDLE="$OUT/bundle-$PRESET"
  "$PYTHON" tools/export_sam3.py --tiny-random --preset "$PRESET" --seed 0 --device "$DEVICE" \
    --bpe "$VOCAB" --out "$BUNDLE" 2>&1 | grep '\[export\]' | tee -a "$OUT/summary.txt"
fi

# The reference's mean ms per stage on a 1008x1008 image with $1 text prompts, and its total.
reference_image() {
  "$PYTHON" - "$BUNDLE" "$DEVICE" "$ITERS" "$1" <<'PY'
import json, subprocess, sys, tempfile
import numpy as np
from PIL import Image
bundle, device, iters, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = ("cat", "dog", "car", "tree", "person", "bird", "cup", "chair")[:prompts]
with tempfile.TemporaryDirectory() as tmp:
    image = f"{tmp}/image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1008, 1008, 3), dtype=np.uint8)).save(image)
    # threshold 0 as the core's bench: every query's mask is resized and encoded on both sides
    case = {"image": image, "threshold": 0.0, "prompts": [{"text": t} for t in texts]}
    out = subprocess.run(
        [sys.executable, "tools/reference.py", "--bundle", bundle, "--device", device, "--warmup"],
        input=json.dumps({"cases": [case] * iters}), capture_output=True, text=True, check=True,
    )
    stages = json.loads(out.stdout)["stage_ms"]
    for stage, ms in stages.items():
        print(f"  {stage:<16} {ms / iters:10.1f} ms")
    print(f"  {'total':<16} {sum(stages.values()) / iters:10.1f} ms")
PY
}
total_ms() { awk '$1 == "total" { print $2 }'; }

log "core: 1008x1008 image, 3 prompts (ms per stage)"
"$CLI" bench "$BUNDLE" --device "$DEVICE" --size 1008x1008 --prompts 3 --iters "$ITERS" | tee -a "$OUT/summary.txt"

log "reference: transformers eager on $DEVICE, same image size and prompts"
reference_image 3 | tee -a "$OUT/summary.txt"

log "cost of an extra text prompt (text encoder + detector + masks), from 1 and 4 prompts"
core1="$("$CLI" bench "$BUNDLE" --device "$DEVICE" --size 1008x1008 --prompts 1 --iters "$ITERS" | total_ms)"
core4="$("$CLI" bench "$BUNDLE" --device "$DEVICE" --size 1008x1008 --prompts 4 --iters "$ITERS" | total_ms)"
ref1="$(reference_image 1 | total_ms)"
ref4="$(reference_image 4 | total_ms)"
awk -v c1="$core1" -v c4="$core4" -v r1="$ref1" -v r4="$ref4" 'BEGIN {
  printf "  core       %8.1f ms per extra prompt (1 prompt %.1f ms, 4 prompts %.1f ms)\n", (c4 - c1) / 3, c1, c4
  printf "  reference  %8.1f ms per extra prompt (1 prompt %.1f ms, 4 prompts %.1f ms)\n", (r4 - r1) / 3, r1, r4
}' | tee -a "$OUT/summary.txt"

# Images per second of the core when B images arrive at once (one vision encoder call of B, as
# IMAGE_MODEL_BATCH_SIZE=B batches concurrent requests), 1 prompt each, for B in $BATCHES.
BATCHES="${BATCHES:-1 8 16}"
batched_throughput() {
  for batch in $BATCHES; do
    "$CLI" bench "$1" --device "$DEVICE" --size 1008x1008 --prompts 1 --iters "$ITERS" --batch "$batch" \
      | awk -v label="$2" '$1 == "throughput" { printf "  %s %8.2f images/s (batch %s\n", label, $2, $5 }'
  done
}
log "batched throughput, 1 prompt (images/s; the reference encodes one image at a time)"
batched_throughput "$BUNDLE" "core fp32" | tee -a "$OUT/summary.txt"
awk -v r1="$ref1" 'BEGIN { printf "  reference  %8.2f images/s (one at a time, 1 prompt %.1f ms)\n", 1000 / r1, r1 }' \
  | tee -a "$OUT/summary.txt"

log "image done: compare the totals (both sides keep every query, threshold 0)"

# bf16: the same weights exported with --dtype bfloat16 (traced under autocast, frozen), and
# with its vision trunk compiled by AOTInductor (--compile; exported again without it if that
# fails). Its steps do not stop the script: the video part below runs whatever they give.
BUNDLE_BF16=""
if [ -d "$BUNDLE/hf" ]; then
  log "export the bfloat16 bundle of the same weights, --compile (log: $OUT/export-bf16.log)"
  export_bf16() {
    "$PYTHON" tools/export_sam3.py --from-bundle "$BUNDLE" --dtype bfloat16 --device "$DEVICE" \
      --out "$OUT/$(basename "$BUNDLE")-bf16" "$@" > "$OUT/export-bf16.log" 2>&1
  }
  if export_bf16 --compile || { log "the --compile export failed; again without it"; export_bf16; }; then
    BUNDLE_BF16="$OUT/$(basename "$BUNDLE")-bf16"
    grep '\[export\]' "$OUT/export-bf16.log" | tee -a "$OUT/summary.txt"
    log "core bf16: 1008x1008 image, 3 prompts (ms per stage; against the fp32 reference above)"
    "$CLI" bench "$BUNDLE_BF16" --device "$DEVICE" --size 1008x1008 --prompts 3 --iters "$ITERS" \
      | tee -a "$OUT/summary.txt" || log "core bf16 bench failed"
    if [ -f "$BUNDLE_BF16/vision_trunk.pt2" ]; then
      log "core bf16, compiled vision trunk (IMAGE_MODEL_COMPILE=true): the same bench"
      "$CLI" bench "$BUNDLE_BF16" --device "$DEVICE" --size 1008x1008 --prompts 3 --iters "$ITERS" \
        --compiled true | tee -a "$OUT/summary.txt" || log "compiled bf16 bench failed"
    fi
    log "batched throughput of the bf16 bundle, 1 prompt (images/s)"
    batched_throughput "$BUNDLE_BF16" "core bf16" | tee -a "$OUT/summary.txt" || log "bf16 batched bench failed"
    log "accuracy of the bf16 bundle against the fp32 one (tools/precision_report.py, needs scikit-image)"
    "$PYTHON" tools/precision_report.py --reference "$BUNDLE" --candidate "$BUNDLE_BF16" --device "$DEVICE" \
      2>&1 | tee -a "$OUT/summary.txt" || log "precision report failed"
  else
    tail -n 20 "$OUT/export-bf16.log" | tee -a "$OUT/summary.txt"
    log "bf16 export failed: no bf16 measurements"
  fi
else
  log "no bf16: $BUNDLE has no hf/ copy (not a random bundle)"
fi

log "video: click tracking, core tracker against the transformers reference on $DEVICE"
VIDEO_FRAMES="${VIDEO_FRAMES:-17}"
VIDEO_RAW="$OUT/shapes.rgb"
"$PYTHON" - "$VIDEO_RAW" "$VIDEO_FRAMES" <<'PY'
import sys
import numpy as np
# 640x480 frames of a moving disc and rectangle over a gradient (raw RGB24, back to back)
path, count = sys.argv[1], int(sys.argv[2])
h, w = 480, 640
yy, xx = np.mgrid[0:h, 0:w]
frames = []
for i in range(count):
    f = np.zeros((h, w, 3), np.uint8)
    f[..., 0] = 90 + 40 * xx // w
    f[..., 1] = 90 + 40 * yy // h
    f[..., 2] = 100
    cx = 60 + (w // 2 - 120) * i // max(1, count - 1)
    f[(xx - cx) ** 2 + (yy - h // 3) ** 2 <= 60 ** 2] = (220, 30, 30)
    ry = (h // 2 - 96) * i // max(1, count - 1)
    f[ry:ry + 96, 2 * w // 3:2 * w // 3 + 106] = (30, 40, 220)
    frames.append(f)
np.stack(frames).tofile(path)
PY
for objects in ${VIDEO_OBJECTS:-1 3 5 8}; do
  "$CLI" track "$BUNDLE" "$VIDEO_RAW" 640 480 --device "$DEVICE" --objects "$objects" | tee -a "$OUT/summary.txt"
  if [ -n "$BUNDLE_BF16" ]; then
    printf '  bf16: ' | tee -a "$OUT/summary.txt"
    "$CLI" track "$BUNDLE_BF16" "$VIDEO_RAW" 640 480 --device "$DEVICE" --objects "$objects" \
      | tee -a "$OUT/summary.txt" || log "bf16 tracking failed"
  fi
  "$PYTHON" - "$BUNDLE" "$DEVICE" "$VIDEO_RAW" "$objects" <<'PY' | tee -a "$OUT/summary.txt"
import json, subprocess, sys
bundle, device, raw, objects = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# the clicks of sam3_core_cli track: spread over the frame, one per object, on frame 0
ops = [{"op": "prompt", "frame": 0, "obj_id": k + 1, "points": [[0.15 + 0.7 * (k % 4) / 3, 0.25 + 0.5 * (k // 4)]],
        "point_labels": [1], "box": None} for k in range(objects)]
ops.append({"op": "propagate", "direction": "forward", "start": 1, "max_frames": None})
script = {"video": raw, "raw": {"width": 640, "height": 480}, "ops": ops}
out = subprocess.run([sys.executable, "tools/video_reference.py", "--bundle", bundle, "--device", device],
                     input=json.dumps(script), capture_output=True, text=True, check=True)
result = json.loads(out.stdout)
print(f"  reference, {objects} objects: {result['timing']['frames_per_second'][-1]:.2f} fps, "
      f"peak RSS {result['peak_rss_mb']:.0f} MiB")
PY
done
log "done: compare fps per object count (the core's line against the reference's)"
