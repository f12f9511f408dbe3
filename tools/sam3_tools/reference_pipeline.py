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
    # torchvision v2 ToDtype(scale=True) multiplies by 1/255 (not a division: the last bit differs)
    pixels = resized.to(torch.float32) * (1.0 / 255.0)
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


def mask_box(mask: np.ndarray) -> list[float]:
    """Normalized [cx, cy, w, h] of the pixels of a binary mask (pixel edges, so a single pixel
    at (x, y) spans x/W .. (x+1)/W); zeros for an empty mask."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, x1 = xs.min() / width, (xs.max() + 1) / width
    y0, y1 = ys.min() / height, (ys.max() + 1) / height
    return [float((x0 + x1) / 2), float((y0 + y1) / 2), float(x1 - x0), float(y1 - y0)]


def tracker_reference_model(video_model_dir):
    """transformers' Sam3TrackerModel (SAM-style clicks) with the weights of a Sam3VideoModel
    checkpoint: the ViT trunk from detector_model.vision_encoder.backbone, the tracker neck from
    tracker_neck, the heads from tracker_model. The neck keeps the official three levels
    (scale factors 4, 2, 1), so the no-memory embedding lands on the 1x map as in SAM3."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3VideoModel

    video_model = Sam3VideoModel.from_pretrained(video_model_dir)
    video_config = video_model.config
    tracker = video_config.tracker_config
    vision = video_config.detector_config.vision_config.to_dict()
    vision["scale_factors"] = vision["scale_factors"][:-1]
    config = Sam3TrackerConfig(
        vision_config=vision,
        prompt_encoder_config=tracker.prompt_encoder_config.to_dict(),
        mask_decoder_config=tracker.mask_decoder_config.to_dict(),
    )
    model = Sam3TrackerModel(config).eval()
    prefixes = {
        "detector_model.vision_encoder.backbone.": "vision_encoder.backbone.",
        "tracker_neck.": "vision_encoder.neck.",
        "tracker_model.": "",
    }
    state = {}
    for key, value in video_model.state_dict().items():
        for prefix, target in prefixes.items():
            if key.startswith(prefix):
                state[target + key[len(prefix):]] = value
    del video_model
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"tracker weights missing from the checkpoint: {missing[:5]}")
    return model


@dataclass
class Clicks:
    points: list[list[float]]  # normalized x, y
    point_labels: list[int]  # 1 positive, 0 negative
    box: list[float] | None = None  # normalized cx, cy, w, h (a region hint)

    @property
    def multimask(self) -> bool:
        """SAM's rule: an ambiguous prompt (one click, no box) asks for three masks."""
        return len(self.points) == 1 and self.box is None


class ReferenceClickSegmenter:
    """SAM-style interactive segmentation with transformers' Sam3TrackerModel."""

    def __init__(self, model, resolution: int, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.resolution = resolution
        self.device = device

    @torch.no_grad()
    def segment(self, rgb: np.ndarray, clicks: Clicks) -> dict:
        height, width = rgb.shape[:2]
        pixels = preprocess(rgb, self.resolution).to(self.device)
        scale = float(self.resolution)
        points = torch.tensor([[clicks.points]], dtype=torch.float32, device=self.device) * scale
        labels = torch.tensor([[clicks.point_labels]], dtype=torch.long, device=self.device)
        boxes = None
        if clicks.box is not None:
            cx, cy, w, h = clicks.box
            boxes = torch.tensor([[[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]], device=self.device) * scale
        out = self.model(
            pixel_values=pixels,
            input_points=points,
            input_labels=labels,
            input_boxes=boxes,
            multimask_output=clicks.multimask,
        )
        iou = out.iou_scores[0, 0]
        best = int(torch.argmax(iou))
        logits = out.pred_masks[0, 0, best][None, None]
        mask = (F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0, 0] > 0).cpu().numpy()
        return {
            "scores": [float(iou[best])],
            "boxes": [mask_box(mask)],
            "masks": [encode_rle(mask)],
            "all_scores": iou.tolist(),
        }
