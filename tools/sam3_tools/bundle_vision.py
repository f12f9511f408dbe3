"""The vision encoder of an exported bundle as one callable, whichever its layout.

Format 4 (exporter 6) stores it as vision_trunk + detector_neck + tracker_neck; formats 1 to
3 as one vision_encoder. Either way the callable maps pixel_values [B, 3, R, R] to the six
maps fpn_0..2, tracker_fpn_0..2 (docs/bundle-format.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

PARTS = ("vision_trunk", "detector_neck", "tracker_neck")


def pixel_spec(manifest: dict) -> dict:
    """The pixel_values spec of the bundle's vision encoder (or trunk)."""
    modules = manifest["modules"]
    return (modules["vision_trunk"] if "vision_trunk" in modules else modules["vision_encoder"])["inputs"][0]


def load_vision(directory: Path, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], tuple]:
    modules = json.loads((Path(directory) / "manifest.json").read_text())["modules"]

    def load(name: str):
        return torch.jit.load(str(Path(directory) / modules[name]["file"]), map_location=device).eval()

    if "vision_trunk" not in modules:
        return load("vision_encoder")
    trunk, detector_neck, tracker_neck = (load(name) for name in PARTS)

    def vision(pixel_values: torch.Tensor) -> tuple:
        features = trunk(pixel_values)
        return (*detector_neck(features), *tracker_neck(features))

    return vision
