"""Fixed-signature wrappers around transformers' SAM3 submodules, for torch.jit.trace.

Each wrapper is tensor-in / tensor-out with no data-dependent control flow; see
docs/bundle-format.md for the signatures. The wrappers call the transformers modules
themselves, so the traced graphs compute exactly what the reference computes.
"""

from __future__ import annotations

import contextlib
import copy
import types

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput, box_cxcywh_to_xyxy

from .roi_align import roi_align_batched


class VisionTrunk(nn.Module):
    """pixels [B, 3, R, R] -> the ViT trunk's last hidden state [B, G*G, C] (vision_features).

    Both necks read it; the bundle keeps the three parts apart so that each caller runs only
    the neck it needs (text prompts: the detector's; clicks and video: the tracker's).
    """

    def __init__(self, video_model):
        super().__init__()
        self.backbone = video_model.detector_model.vision_encoder.backbone

    def forward(self, pixel_values: torch.Tensor):
        return self.backbone(pixel_values).last_hidden_state


class VisionNeck(nn.Module):
    """vision_features [B, G*G, C] -> three FPN levels (4x, 2x, 1x the patch grid).

    The neck's last (0.5x) level is never used by SAM3 and is not computed. The tracker's neck
    passes its first two levels through the SAM mask decoder's conv_s0 / conv_s1 here, once per
    image, as transformers' video model does.
    """

    def __init__(self, fpn_layers, grid: int, conv_s0=None, conv_s1=None):
        super().__init__()
        self.levels = nn.ModuleList(list(fpn_layers)[:-1])
        self.grid = grid
        self.conv_s0 = conv_s0 if conv_s0 is not None else nn.Identity()
        self.conv_s1 = conv_s1 if conv_s1 is not None else nn.Identity()

    def forward(self, vision_features: torch.Tensor):
        batch = vision_features.shape[0]
        spatial = vision_features.view(batch, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        maps = [level(spatial) for level in self.levels]
        return self.conv_s0(maps[0]), self.conv_s1(maps[1]), maps[2]


def vision_parts(video_model) -> tuple[VisionTrunk, VisionNeck, VisionNeck]:
    """The trunk, the detector's neck and the tracker's neck (bundle format 4)."""
    vit = video_model.detector_model.vision_encoder.config.backbone_config
    size = vit.image_size if isinstance(vit.image_size, int) else vit.image_size[0]
    patch = vit.patch_size if isinstance(vit.patch_size, int) else vit.patch_size[0]
    grid = size // patch
    decoder = video_model.tracker_model.mask_decoder
    detector_neck = VisionNeck(video_model.detector_model.vision_encoder.neck.fpn_layers, grid)
    tracker_neck = VisionNeck(video_model.tracker_neck.fpn_layers, grid, decoder.conv_s0, decoder.conv_s1)
    return VisionTrunk(video_model), detector_neck, tracker_neck


class VisionEncoder(nn.Module):
    """pixels [1, 3, R, R] -> detector FPN maps (3 levels) + tracker FPN maps (3 levels): the
    three vision parts in one module (the vision encoder of bundle formats 1 to 3)."""

    def __init__(self, video_model):
        super().__init__()
        self.trunk, self.detector_neck, self.tracker_neck = vision_parts(video_model)

    def forward(self, pixel_values: torch.Tensor):
        features = self.trunk(pixel_values)
        return (*self.detector_neck(features), *self.tracker_neck(features))


class TextEncoder(nn.Module):
    """token ids [B, L] + attention mask [B, L] -> text features [B, L, D].

    Sam3Model.get_text_features: the CLIP text model's last hidden state through SAM3's own
    text projection (CLIP's projection head is not used).
    """

    def __init__(self, detector_model):
        super().__init__()
        self.text_encoder = detector_model.text_encoder
        self.text_projection = detector_model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return self.text_projection(out.last_hidden_state)


def without_encoders(detector_model):
    """A shallow copy of Sam3Model whose vision and text encoders are empty.

    Sam3Model.forward never touches them when given vision_embeds and text_embeds; dropping
    them keeps their weights out of the traced detector file.
    """
    clone = copy.copy(detector_model)
    clone._modules = dict(detector_model._modules)
    clone._modules["vision_encoder"] = nn.Module()
    clone._modules["text_encoder"] = nn.Module()
    return clone


class Detector(nn.Module):
    """FPN maps (batch 1) + text features/mask + boxes/labels -> logits, boxes, presence, masks.

    Boxes always go through the geometry encoder (its CLS token joins the prompt), as in the
    official SAM3; padding slots carry label -10 and are masked out.
    """

    def __init__(self, detector_model):
        super().__init__()
        self.detector = without_encoders(detector_model)
        self.position_encoding = detector_model.vision_encoder.neck.position_encoding

    def forward(
        self,
        fpn_0: torch.Tensor,
        fpn_1: torch.Tensor,
        fpn_2: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        boxes: torch.Tensor,
        box_labels: torch.Tensor,
    ):
        batch = text_features.shape[0]
        maps = tuple(m.expand(batch, -1, -1, -1) for m in (fpn_0, fpn_1, fpn_2))
        # The 4th level is dropped by Sam3Model.forward ([:-1]); pass a placeholder.
        # The neck's sine position encodings depend on the map shapes only.
        positions = tuple(self.position_encoding(m.shape, m.device, m.dtype) for m in maps)
        vision = Sam3VisionEncoderOutput(
            fpn_hidden_states=maps + (maps[-1],),
            fpn_position_encoding=positions + (maps[-1],),
        )
        text = BaseModelOutputWithPooling(pooler_output=text_features)
        out = self.detector(
            vision_embeds=vision,
            text_embeds=text,
            attention_mask=text_mask,
            input_boxes=boxes,
            input_boxes_labels=box_labels,
        )
        return out.pred_logits, out.pred_boxes, out.presence_logits, out.pred_masks


def _encode_boxes_batched(self, boxes, boxes_mask, boxes_labels, vision_features):
    """Sam3GeometryEncoder._encode_boxes with ROI align on the batched box tensor.

    transformers passes ``boxes.unbind(0)`` (a Python list whose length a trace would freeze) to
    roi_align; this computes the same values from the [B, N, 4] tensor so the traced detector
    accepts any batch size and box count. Equality with the original is tested.
    """
    batch_size, num_boxes = boxes.shape[:2]
    height, width = vision_features.shape[-2:]
    boxes_embed = self.boxes_direct_project(boxes)
    boxes_xyxy = box_cxcywh_to_xyxy(boxes)
    scale = torch.tensor([width, height, width, height], dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    boxes_xyxy = boxes_xyxy * scale.view(1, 1, 4)
    sampled = roi_align_batched(vision_features, boxes_xyxy, self.roi_size)
    pooled = self.boxes_pool_project(sampled).view(batch_size, num_boxes, self.hidden_size)
    boxes_embed = boxes_embed + pooled
    center_x, center_y, box_width, box_height = boxes.unbind(-1)
    pos_enc = self._encode_box_coordinates(
        center_x.flatten(), center_y.flatten(), box_width.flatten(), box_height.flatten()
    )
    pos_enc = pos_enc.view(batch_size, num_boxes, pos_enc.shape[-1])
    boxes_embed = boxes_embed + self.boxes_pos_enc_project(pos_enc)
    label_embed = self.label_embed(boxes_labels.long())
    return label_embed + boxes_embed, boxes_mask


@contextlib.contextmanager
def traceable_geometry_encoder(detector_model):
    """Swaps in _encode_boxes_batched on this model instance for the duration of a trace."""
    encoder = detector_model.geometry_encoder
    encoder._encode_boxes = types.MethodType(_encode_boxes_batched, encoder)
    try:
        yield
    finally:
        del encoder._encode_boxes


class PointDecoder(nn.Module):
    """Interactive (SAM-style) single-object decoding on the tracker features of one image.

    in: tracker_fpn_0..2 (batch 1, from VisionEncoder), points [B, 1, N, 2] in pixels of the
    R x R model input, point_labels [B, 1, N] (1 positive, 0 negative, 2/3 box corners).
    out: mask logits [B, 1, K, 4G, 4G], predicted IoU [B, 1, K], object score logits [B, 1, 1],
    K = 3 with multimask output, else 1 (SAM's dynamic selection via stability).

    As the official image predictor: no-memory embedding added to the coarsest map, a box as
    its two corner points (labels 2, 3), and a trailing not-a-point token (label -1) appended
    by the prompt encoder. Token order does not matter to the two-way transformer.
    """

    def __init__(self, video_model, multimask_output: bool):
        super().__init__()
        tracker = video_model.tracker_model
        self.prompt_encoder = tracker.prompt_encoder
        self.mask_decoder = tracker.mask_decoder
        self.no_memory_embedding = tracker.no_memory_embedding
        # A function of the configuration only: computed once at export, a constant in the graph.
        self.register_buffer("image_positions", tracker.get_image_wide_positional_embeddings().detach().clone())
        self.multimask_output = multimask_output

    def forward(self, tracker_fpn_0, tracker_fpn_1, tracker_fpn_2, points, point_labels):
        batch = points.shape[0]
        image = tracker_fpn_2 + self.no_memory_embedding.view(1, -1, 1, 1)
        sparse, dense = self.prompt_encoder(
            input_points=points, input_labels=point_labels, input_boxes=None, input_masks=None
        )
        masks, iou, _, object_scores = self.mask_decoder(
            image_embeddings=image.expand(batch, -1, -1, -1),
            image_positional_embeddings=self.image_positions.expand(batch, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
            high_resolution_features=[
                tracker_fpn_0.expand(batch, -1, -1, -1),
                tracker_fpn_1.expand(batch, -1, -1, -1),
            ],
        )
        return masks, iou, object_scores
