"""Does batching images through a bundle's vision encoder pay on this device?

The question cross-request batching rests on: N images in one vision-encoder call against N
calls of one image, same bundle, same device, same run. Prints images per second at each
batch size and the ratio to batch 1, and checks that every batch equals its images encoded
alone (the largest absolute difference).

    .venv/bin/python tools/bench_vision_batch.py weights/sam3 --batches 1 2 4 --repeats 2
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sam3_tools.bundle_vision import load_vision, pixel_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per batch size (the best counts)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    if pixel_spec(manifest)["shape"][0] != "B":
        raise SystemExit(f"{args.bundle}: its vision encoder takes one image (exporter < 5): re-export it")
    resolution = manifest["resolution"]
    device = torch.device(args.device)
    vision = load_vision(args.bundle, device)

    def timed(pixels: torch.Tensor):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        outputs = vision(pixels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started, outputs

    torch.manual_seed(0)
    largest = max(args.batches)
    pixels = torch.randn(largest, 3, resolution, resolution, device=device)
    with torch.inference_mode():
        timed(pixels[:1])  # warm-up (first-call graph optimization)
        alone = [timed(pixels[i : i + 1])[1] for i in range(largest)]
        baseline = None
        print(f"{manifest['model']['id']} ({manifest.get('dtype', 'float32')}) at {resolution} px on {device}")
        print(f"{'batch':>5} {'s/call':>8} {'images/s':>9} {'vs batch 1':>10} {'max diff':>9}")
        for batch in args.batches:
            best, outputs = min((timed(pixels[:batch]) for _ in range(args.repeats)), key=lambda run: run[0])
            rate = batch / best
            if batch == 1:
                baseline = rate
            diff = max(
                (out.float() - torch.cat([maps[k] for maps in alone[:batch]]).float()).abs().max().item()
                for k, out in enumerate(outputs)
            )
            ratio = f"{rate / baseline:.2f}x" if baseline else "-"
            print(f"{batch:>5} {best:>8.3f} {rate:>9.2f} {ratio:>10} {diff:>9.2g}")


if __name__ == "__main__":
    main()
