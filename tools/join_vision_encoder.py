#!/usr/bin/env python3
"""Writes a format-4 bundle again in the format-3 layout: one vision encoder module.

  join_vision_encoder.py BUNDLE OUT

Format 4 (exporter 6) splits the vision encoder into vision_trunk, detector_neck and
tracker_neck; the server still loads bundles of one vision_encoder (formats 1 to 3, as earlier
exporters wrote them). This copy runs the same three traced graphs inside one module, so that
tests can check that both layouts give the same results without keeping an older exporter.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from torch import nn

PARTS = ("vision_trunk", "detector_neck", "tracker_neck")


class JoinedVisionEncoder(nn.Module):
    def __init__(self, trunk, detector_neck, tracker_neck):
        super().__init__()
        self.trunk, self.detector_neck, self.tracker_neck = trunk, detector_neck, tracker_neck

    def forward(self, pixel_values: torch.Tensor):
        features = self.trunk(pixel_values)
        return (*self.detector_neck(features), *self.tracker_neck(features))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    if manifest["format_version"] != 4:
        raise SystemExit(f"{args.bundle}: format {manifest['format_version']}, expected 4")
    modules = manifest["modules"]
    shutil.copytree(args.bundle, args.out, ignore=shutil.ignore_patterns(*(modules[p]["file"] for p in PARTS)))
    parts = [torch.jit.load(str(args.bundle / modules[part]["file"]), map_location="cpu") for part in PARTS]
    joined = torch.jit.script(JoinedVisionEncoder(*parts))
    joined.save(str(args.out / "vision_encoder.pt"))
    encoder = {
        "file": "vision_encoder.pt",
        "inputs": modules["vision_trunk"]["inputs"],
        "outputs": modules["detector_neck"]["outputs"] + modules["tracker_neck"]["outputs"],
    }
    manifest["format_version"] = 3
    manifest["modules"] = {"vision_encoder": encoder, **{k: v for k, v in modules.items() if k not in PARTS}}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
