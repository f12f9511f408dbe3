"""The reference SAM3 image pipeline: transformers' eager model plus the official pre- and
post-processing, written out here because the HF processors need torchvision.

Official preprocessing (sam3 Sam3Processor, torchvision v2): uint8 RGB -> antialiased bilinear
resize to R x R on the uint8 tensor -> /255 -> normalize(mean 0.5, std 0.5).
Official post-processing: score = sigmoid(query logit) * sigmoid(presence logit); keep
score > threshold; mask logits bilinearly resized to the original size, binarized at > 0
(sigmoid > 0.5); boxes are normalized xyxy (converted here to the API's cxcywh).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

# The text the official implementation uses for box-only (visual) prompts.
VISUAL_PROMPT_TEXT = "visual"
PADDING_LABEL = -10


def preprocess(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, R, R] normalized."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    resized = F.interpolate(image, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    pixels = resized.to(torch.float32) / 255.0
    return (pixels - 0.5) / 0.5


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


@dataclass
class Concept:
    text: str
    boxes: list[list[float]] = field(default_factory=list)  # normalized cx, cy, w, h
    box_labels: list[bool] = field(default_factory=list)


class ReferenceSegmenter:
    """Runs concept queries on images with transformers' Sam3Model (eager, fp32)."""

    def __init__(self, model, tokenizer, resolution: int, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.device = device
        self.stage_ms: dict[str, float] = {}

    def _timed(self, stage: str, started: float) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + (time.perf_counter() - started) * 1000

    @torch.no_grad()
    def encode_image(self, rgb: np.ndarray):
        started = time.perf_counter()
        pixels = preprocess(rgb, self.resolution).to(self.device)
        self._timed("preprocess", started)
        started = time.perf_counter()
        embeds = self.model.get_vision_features(pixel_values=pixels)
        self._timed("vision_encoder", started)
        return embeds

    @torch.no_grad()
    def segment(self, vision_embeds, size: tuple[int, int], concept: Concept, threshold: float) -> dict:
        height, width = size
        started = time.perf_counter()
        tokens = self.tokenizer(
            [concept.text], padding="max_length", truncation=True, max_length=32, return_tensors="pt"
        )
        ids = tokens["input_ids"].to(self.device)
        attention = tokens["attention_mask"].to(self.device)
        text_embeds = self.model.get_text_features(input_ids=ids, attention_mask=attention, return_dict=True)
        self._timed("text_encoder", started)
        if concept.boxes:
            boxes = torch.tensor([concept.boxes], dtype=torch.float32, device=self.device)
            labels = torch.tensor([[1 if label else 0 for label in concept.box_labels]], device=self.device)
        else:
            # transformers skips the geometry encoder without boxes; the official model always
            # runs it, so pass one padding box (masked out, only the CLS token remains).
            boxes = torch.zeros(1, 1, 4, device=self.device)
            labels = torch.full((1, 1), PADDING_LABEL, dtype=torch.long, device=self.device)
        started = time.perf_counter()
        out = self.model(
            vision_embeds=vision_embeds,
            text_embeds=text_embeds,
            attention_mask=attention,
            input_boxes=boxes,
            input_boxes_labels=labels,
        )
        self._timed("detector", started)
        started = time.perf_counter()
        scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
        keep = torch.nonzero(scores > threshold).flatten()
        order = keep[torch.argsort(scores[keep], descending=True, stable=True)]
        result = {"scores": [], "boxes": [], "masks": [], "all_scores": scores.tolist()}
        if order.numel() > 0:
            logits = out.pred_masks[0, order][None]
            resized = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0]
            binary = (resized > 0).cpu().numpy()
            result["scores"] = scores[order].tolist()
            result["boxes"] = xyxy_to_cxcywh(out.pred_boxes[0, order]).tolist()
            result["masks"] = [encode_rle(m) for m in binary]
        self._timed("postprocess", started)
        return result
