"""Makes transformers' SAM3 run without torchvision (see roi_align.py)."""

from __future__ import annotations

import types

from .roi_align import roi_align


def install_roi_align() -> None:
    """Points transformers' SAM3 at our roi_align, unless the real torchvision is importable."""
    from transformers.models.sam3 import modeling_sam3

    existing = getattr(modeling_sam3, "torchvision", None)
    if existing is not None and hasattr(existing, "ops") and hasattr(existing.ops, "roi_align"):
        return
    modeling_sam3.torchvision = types.SimpleNamespace(ops=types.SimpleNamespace(roi_align=roi_align))
