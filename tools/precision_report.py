#!/usr/bin/env python3
"""Accuracy of a reduced-precision bundle against the fp32 bundle of the same weights.

  precision_report.py --reference weights/sam3 --candidate weights/sam3-bf16 [--json]

Both bundles' traced modules (what the server runs) segment the parity photos (scikit-image's
astronaut, coffee, chelsea and rocket) for the text prompts below, and a click on each photo,
from the same preprocessed pixels. Random weights put many mask logits near 0, where any
rounding flips the thresholded pixel, so a plain IoU of the masks exaggerates small errors.
The measures, for the queries the fp32 bundle detects (score > --threshold) and for the clicks:

- mask_logit_error: mean and max |candidate - reference| of the mask logits, and the same
  relative to the reference's mean |logit| (mask_logit_relative);
- confident_iou: the IoU of the two masks (logit > 0) over the pixels where the reference is
  confident (|logit| >= --margin); the lowest over the masks, and their mean;
- iou: the plain IoU of the masks (lowest and mean), for comparison;
- score_error: max and mean |candidate - reference| of the detection scores (sigmoid(query) x
  sigmoid(presence)) over all queries, and max of the clicks' IoU predictions;
- box_error: max |candidate - reference| of the detected boxes (normalized coordinates);
- detections: how many fp32 detections the candidate also detects, of how many.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sam3_tools.bundle_vision import load_vision  # noqa: E402
from sam3_tools.mask_postprocess import pair_iou  # noqa: E402
from sam3_tools.reference_pipeline import preprocess  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Token ids (between BOS and EOS) of "person", "a cup of coffee", "cat" and "object".
PROMPTS = ([2533], [320, 1937, 539, 2453], [2368], [14115])


class Bundle:
    def __init__(self, directory: Path, device: str = "cpu"):
        self.manifest = json.loads((directory / "manifest.json").read_text())
        self.device = torch.device(device)
        modules = self.manifest["modules"]
        self.modules = {
            name: torch.jit.load(str(directory / modules[name]["file"]), map_location=self.device).eval()
            for name in ("text_encoder", "detector", "point_decoder_multimask")
        }
        self.vision = load_vision(directory, self.device)

    def __call__(self, name: str, *inputs):
        outputs = self.modules[name](*(tensor.to(self.device) for tensor in inputs))
        if isinstance(outputs, torch.Tensor):
            return outputs.cpu()
        return tuple(output.cpu() for output in outputs)


def prompt_tensors(manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    text = manifest["text"]
    context = text["context_length"]
    ids = torch.full((len(PROMPTS), context), text["pad_id"], dtype=torch.long)
    mask = torch.zeros(len(PROMPTS), context, dtype=torch.long)
    for row, tokens in enumerate(PROMPTS):
        sequence = [text["bos_id"], *tokens, text["eos_id"]]
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids, mask


@torch.no_grad()
def outputs(bundle: Bundle, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    maps = tuple(level.cpu() for level in bundle.vision(pixels.to(bundle.device)))
    features = bundle("text_encoder", ids, mask)
    batch = ids.shape[0]
    boxes = torch.zeros(batch, 1, 4)
    labels = torch.full((batch, 1), -10, dtype=torch.long)
    expand = [level.expand(batch, -1, -1, -1) for level in maps[:3]]
    logits, pred_boxes, presence, masks = bundle("detector", *expand, features, mask, boxes, labels)
    resolution = bundle.manifest["resolution"]
    click = torch.tensor([[[[0.5, 0.45]]]]) * resolution
    click_masks, click_scores, _ = bundle("point_decoder_multimask", *maps[3:], click, torch.ones(1, 1, 1, dtype=torch.long))
    return {
        "scores": logits.sigmoid() * presence.sigmoid(),
        "boxes": pred_boxes,
        "masks": masks,
        "click_masks": click_masks[0, 0],
        "click_scores": click_scores[0, 0],
    }


def compare(reference: Bundle, candidate: Bundle, threshold: float, margin: float) -> dict:
    from skimage import data

    ids, mask = prompt_tensors(reference.manifest)
    errors, relatives, confident, plain, boxes = [], [], [], [], []
    score_errors, click_score_error, kept, detected = [], 0.0, 0, 0
    for photo in PHOTOS:
        pixels = preprocess(getattr(data, photo)(), reference.manifest["resolution"])
        ref, cand = outputs(reference, pixels, ids, mask), outputs(candidate, pixels, ids, mask)
        score_errors.append((ref["scores"] - cand["scores"]).abs().flatten())
        click_score_error = max(click_score_error, (ref["click_scores"] - cand["click_scores"]).abs().max().item())
        chosen = (ref["scores"] > threshold).nonzero().tolist()
        pairs = [(ref["masks"][p, q], cand["masks"][p, q]) for p, q in chosen]
        pairs += list(zip(ref["click_masks"], cand["click_masks"]))
        for p, q in chosen:
            detected += 1
            kept += int(cand["scores"][p, q].item() > threshold)
            boxes.append((ref["boxes"][p, q] - cand["boxes"][p, q]).abs().max().item())
        for a, b in pairs:
            error = (a - b).abs()
            errors.append((error.mean().item(), error.max().item()))
            relatives.append(error.mean().item() / max(a.abs().mean().item(), 1e-12))
            sure = (a.abs() >= margin).numpy()
            a_in, b_in = (a > 0).numpy(), (b > 0).numpy()
            confident.append(pair_iou(a_in & sure, b_in & sure))
            plain.append(pair_iou(a_in, b_in))
    all_score_errors = torch.cat(score_errors)
    return {
        "reference_dtype": reference.manifest["dtype"],
        "candidate_dtype": candidate.manifest["dtype"],
        "masks": len(errors),
        "mask_logit_error": {"mean": float(np.mean([e[0] for e in errors])), "max": max(e[1] for e in errors)},
        "mask_logit_relative": {"mean": float(np.mean(relatives)), "max": max(relatives)},
        "confident_iou": {"min": min(confident), "mean": float(np.mean(confident)), "margin": margin},
        "iou": {"min": min(plain), "mean": float(np.mean(plain))},
        "score_error": {
            "max": all_score_errors.max().item(),
            "mean": all_score_errors.mean().item(),
            "clicks": click_score_error,
        },
        "box_error": max(boxes, default=0.0),
        "detections": {"reference": detected, "candidate_too": kept, "threshold": threshold},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="the fp32 bundle")
    parser.add_argument("--candidate", required=True, help="the reduced-precision bundle of the same weights")
    parser.add_argument("--threshold", type=float, default=0.5, help="detection score threshold")
    parser.add_argument("--margin", type=float, default=1.0, help="|logit| from which a pixel is confident")
    parser.add_argument("--device", default="cpu", help="the device both bundles were exported for")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    reference, candidate = Bundle(Path(args.reference), args.device), Bundle(Path(args.candidate), args.device)
    if reference.manifest["model"]["checksum"] != candidate.manifest["model"]["checksum"]:
        raise SystemExit("the two bundles hold different weights (their model checksums differ)")
    if reference.manifest["dtype"] != "float32":
        raise SystemExit(f"--reference is a {reference.manifest['dtype']} bundle: the reference is the fp32 one")
    for bundle in (reference, candidate):
        if bundle.manifest["device_type"] != bundle.device.type:
            raise SystemExit(f"a bundle exported for {bundle.manifest['device_type']} cannot run on --device {args.device}")
    torch.set_grad_enabled(False)
    report = compare(reference, candidate, args.threshold, args.margin)
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
