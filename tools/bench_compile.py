"""Does an optimized graph pay for the vision trunk on this device? (IMAGE_MODEL_COMPILE)

Times a slice of the real ViT-L/14 trunk at 1008 px (random weights, `--layers` layers of
which the last is global, as every eighth layer of SAM3's is) five ways, each against the same
input: eager transformers, `torch.jit.trace` (what fp32 bundles hold), the traced graph frozen
(what bf16 bundles hold), frozen and passed through `optimize_for_inference`, and an AOTInductor package (`torch.export`, then
`torch._inductor.aoti_compile_and_package`, loaded back with `aoti_load_package`, the Python
twin of C++'s `AOTIModelPackageLoader`). `--dtype bfloat16` runs each under autocast. Prints
seconds per call (median of `--iters`) and each graph's largest difference from eager.

    .venv/bin/python tools/bench_compile.py [--layers 4] [--iters 3] [--dtype bfloat16]
        [--package-dir DIR]   # keep (and reuse) the compiled package there
        [--freezing]          # also an AOTInductor package compiled with inductor's freezing
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn


class Trunk(nn.Module):
    """pixels -> last hidden state, the signature of the bundle's vision_trunk."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values).last_hidden_state


def build_trunk(layers: int) -> Trunk:
    from transformers import Sam3VideoConfig
    from transformers.models.sam3.modeling_sam3 import Sam3ViTModel

    config = Sam3VideoConfig().detector_config.vision_config.backbone_config
    config.num_hidden_layers = layers
    config.global_attn_indexes = [layers - 1]
    torch.manual_seed(0)
    return Trunk(Sam3ViTModel(config)).eval()


def seconds(call, inputs, iters: int) -> tuple[float, torch.Tensor]:
    out = call(inputs)  # warm-up (graph optimization passes, allocator)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        out = call(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--package-dir", type=Path, default=None)
    parser.add_argument(
        "--freezing",
        action="store_true",
        help="also compile with inductor's freezing (weights folded into constants, their casts done once)",
    )
    args = parser.parse_args(argv)

    trunk = build_trunk(args.layers)
    size = trunk.backbone.config.image_size
    pixels = torch.randn(1, 3, size, size)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    results: list[tuple[str, float, float]] = []
    with torch.inference_mode(), autocast:
        eager_s, reference = seconds(trunk, pixels, args.iters)
        results.append(("eager", eager_s, 0.0))
        traced = torch.jit.trace(trunk, (pixels,), check_trace=False)
        traced_s, out = seconds(traced, pixels, args.iters)
        results.append(("traced", traced_s, (out - reference).abs().max().item()))
        frozen = torch.jit.freeze(traced.eval(), optimize_numerics=False)  # as precision.freeze
        frozen_s, out = seconds(frozen, pixels, args.iters)
        results.append(("frozen (bf16 bundles)", frozen_s, (out - reference).abs().max().item()))
        optimized = torch.jit.optimize_for_inference(frozen)
        optimized_s, out = seconds(optimized, pixels, args.iters)
        results.append(("frozen + optimize_for_inference", optimized_s, (out - reference).abs().max().item()))

    package_dir = args.package_dir or Path("/tmp")
    for freezing in (False, True) if args.freezing else (False,):
        suffix = "-frozen" if freezing else ""
        package = package_dir / f"vit{args.layers}-{args.dtype}-dynamic{suffix}.pt2"
        if not package.exists():
            package_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            # A batch dimension of 1 to 64 (traced on a batch of 2), as the exporter's --compile, which
            # also freezes (the --freezing row).
            batch = torch.export.Dim("B", min=1, max=64)
            with torch.no_grad(), autocast:
                exported = torch.export.export(trunk, (pixels.repeat(2, 1, 1, 1),), dynamic_shapes=({0: batch},))
                torch._inductor.aoti_compile_and_package(
                    exported, package_path=str(package), inductor_configs={"freezing": freezing}
                )
            print(f"compiled {package} in {time.perf_counter() - start:.0f} s", flush=True)
        compiled = torch._inductor.aoti_load_package(str(package))
        with torch.inference_mode():
            aoti_s, out = seconds(lambda x: compiled(x), pixels, args.iters)
        name = "AOTInductor" + (" (inductor freezing)" if freezing else "")
        results.append((name, aoti_s, (out.float() - reference.float()).abs().max().item()))

    print(
        f"ViT-L/14 trunk, {args.layers} layers (last global) at {size} px, {args.dtype}, "
        f"{torch.get_num_threads()} threads, median of {args.iters}"
    )
    for name, secs, diff in results:
        print(f"  {name:34s} {secs:7.3f} s   {eager_s / secs:5.2f}x eager   max |diff| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
