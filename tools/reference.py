#!/usr/bin/env python3
"""The correctness oracle: transformers' SAM3 on given images and prompts, as JSON.

  reference.py --bundle <bundle dir> [--model <hf dir or hub id>] [--device cpu] < cases.json

cases.json: {"cases": [{"image": "<png/jpeg path>", "threshold": 0.3,
                         "prompts": [{"text": "cat", "boxes": [[cx, cy, w, h]], "box_labels": [true]},
                                     {"points": [[x, y]], "point_labels": [1], "box": [cx, cy, w, h]}]}]}
A prompt with "points" is an interactive (SAM-style) query: one mask, its predicted IoU as the
score, its box computed from the mask; "box" is optional there. Other prompts are concepts
(text plus exemplar boxes; no text means the official "visual" prompt).
The image file holds the exact RGB pixels the server decoded (PNG is lossless), so both sides
start from the same uint8 data. The model is the bundle's own hf/ copy (random bundles) unless
--model names the checkpoint the bundle was exported from.

Prints {"results": [{"image_size": {...}, "prompts": [{"scores", "boxes", "masks", "all_scores"}]}],
        "stage_ms": {...}, "load_ms": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sam3_tools.patches import install_roi_align  # noqa: E402
from sam3_tools.reference_pipeline import (  # noqa: E402
    VISUAL_PROMPT_TEXT,
    Clicks,
    Concept,
    ReferenceClickSegmenter,
    ReferenceSegmenter,
    tracker_reference_model,
)
from tokenizer_reference import build_tokenizer  # noqa: E402


class Reference:
    """Concept prompts through Sam3Model, clicks through Sam3TrackerModel (loaded on first use)."""

    def __init__(self, bundle: Path, model_arg: str | None, device: str):
        from transformers import Sam3Model

        install_roi_align()
        manifest = json.loads((bundle / "manifest.json").read_text())
        self.source = model_arg or str(bundle / "hf")
        self.resolution = manifest["resolution"]
        self.device = device
        with tempfile.TemporaryDirectory() as directory:
            tokenizer = build_tokenizer(str(bundle / manifest["text"]["vocab_file"]), directory)
        self.concepts = ReferenceSegmenter(Sam3Model.from_pretrained(self.source), tokenizer, self.resolution, device)
        self._clicks: ReferenceClickSegmenter | None = None

    @property
    def clicks(self) -> ReferenceClickSegmenter:
        if self._clicks is None:
            from transformers.utils import cached_file

            source = self.source
            if not Path(source).is_dir():  # a hub id: the checkpoint's local snapshot
                source = str(Path(cached_file(source, "config.json")).parent)
            self._clicks = ReferenceClickSegmenter(tracker_reference_model(source), self.resolution, self.device)
        return self._clicks


def run(reference: Reference, cases: list[dict]) -> list[dict]:
    segmenter = reference.concepts
    results = []
    for case in cases:
        rgb = np.asarray(Image.open(case["image"]).convert("RGB"))
        height, width = rgb.shape[:2]
        embeds = segmenter.encode_image(rgb)
        prompts = []
        for prompt in case["prompts"]:
            if "points" in prompt:
                clicks = Clicks(prompt["points"], prompt["point_labels"], prompt.get("box"))
                prompts.append(reference.clicks.segment(rgb, clicks))
                continue
            concept = Concept(
                text=prompt.get("text") or VISUAL_PROMPT_TEXT,
                boxes=prompt.get("boxes", []),
                box_labels=prompt.get("box_labels", []),
            )
            prompts.append(segmenter.segment(embeds, (height, width), concept, case["threshold"]))
        results.append({"image_size": {"width": width, "height": height}, "prompts": prompts})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--model", help="checkpoint the bundle came from (default: <bundle>/hf)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--warmup", action="store_true", help="run the first case once untimed (benchmarks)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    reference = Reference(args.bundle, args.model, args.device)
    load_ms = (time.perf_counter() - started) * 1000
    cases = json.load(sys.stdin)["cases"]
    if args.warmup and cases:
        run(reference, cases[:1])
        reference.concepts.stage_ms.clear()
    results = run(reference, cases)
    json.dump({"results": results, "stage_ms": reference.concepts.stage_ms, "load_ms": load_ms}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
