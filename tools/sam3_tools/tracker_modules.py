"""Fixed-signature wrappers around transformers' SAM3 video tracker, for torch.jit.trace.

The modules of the video half of the bundle (docs/video-internals.md section 1,
docs/bundle-format.md): `memory_attention`, `tracker_decoder(_multimask)`, `memory_encoder` and,
for concept tracking (docs/video-concepts.md), `tracker_mask_decoder`.
The per-frame bookkeeping of the reference (which memories and pointers a frame attends to, when
memories are encoded) lives in native/core; these graphs are the tensor computations between.

The reference concatenates a variable number of memories and object pointers for each frame and
calls its memory attention without a mask. `MemoryAttention` takes a fixed number of slots with
validity flags instead and masks the invalid keys (additive -inf) in every cross-attention layer:
the same softmax over the same keys, so the same result (keys are order-independent). It reuses
the reference submodules (projections, layer norms, rotary embedding, the reference's own self
attention); only the cross attention is written out here, because the reference's has no mask
argument. The decoders run the reference's `_single_frame_forward` step by step on its own
submodules, batched over objects; the memory encoder is `_encode_new_memory` with the
binarize flag as an input; the mask decoder is `_use_mask_as_output` (a detection's mask as the
tracker's output), batched the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
    NO_OBJ_SCORE,
    eager_attention_forward,
    get_1d_sine_pe,
    rotate_pairwise,
)


def tracker_geometry(tracker) -> dict:
    """Sizes of the tracker that the bundle's modules and manifest are built on."""
    config = tracker.config
    grid = tracker.prompt_encoder.image_embedding_size[0]
    return {
        "resolution": int(tracker.image_size),
        "grid": int(grid),
        "hidden": int(tracker.hidden_dim),
        "mem_dim": int(tracker.mem_dim),
        "num_maskmem": int(tracker.num_maskmem),
        "max_cond_frames_in_attn": int(config.max_cond_frame_num),
        "max_object_pointers": int(config.max_object_pointers_in_encoder),
        "memory_input_size": [4 * int(s) for s in tracker.prompt_encoder.mask_input_size],
    }


def memory_slots(tracker) -> tuple[int, int]:
    """(NS, NP): the spatial memory slots (the selected conditioning frames plus the
    num_maskmem - 1 previous frames) and the object pointer slots (up to
    max_object_pointers conditioning pointers, max_object_pointers - 1 previous frames, and one
    spare) of `memory_attention`."""
    g = tracker_geometry(tracker)
    spatial = g["max_cond_frames_in_attn"] + g["num_maskmem"] - 1
    pointers = g["max_object_pointers"] + (g["max_object_pointers"] - 1) + 1
    return spatial, pointers


def tracker_manifest(tracker) -> dict:
    """The manifest's `tracker` block (docs/bundle-format.md): the configuration the C++
    bookkeeping between the modules follows."""
    config = tracker.config
    g = tracker_geometry(tracker)
    spatial, pointers = memory_slots(tracker)
    return {
        "mem_dim": g["mem_dim"],
        "num_maskmem": g["num_maskmem"],
        "max_cond_frames_in_attn": g["max_cond_frames_in_attn"],
        "max_object_pointers": g["max_object_pointers"],
        "memory_slots": spatial,
        "pointer_slots": pointers,
        "multimask_output_in_sam": bool(config.multimask_output_in_sam),
        "multimask_min_pt_num": int(config.multimask_min_pt_num),
        "multimask_max_pt_num": int(config.multimask_max_pt_num),
        "multimask_output_for_tracking": bool(config.multimask_output_for_tracking),
        "sigmoid_scale_for_mem_enc": float(config.sigmoid_scale_for_mem_enc),
        "sigmoid_bias_for_mem_enc": float(config.sigmoid_bias_for_mem_enc),
    }


# Sam3VideoConfig's settings of concept tracking (docs/video-concepts.md), by their own names:
# the manifest's `concept` block.
CONCEPT_FIELDS: dict[str, type] = {
    "score_threshold_detection": float,
    "det_nms_thresh": float,
    "assoc_iou_thresh": float,
    "trk_assoc_iou_thresh": float,
    "new_det_thresh": float,
    "recondition_on_trk_masks": bool,
    "hotstart_delay": int,
    "hotstart_unmatch_thresh": int,
    "hotstart_dup_thresh": int,
    "suppress_unmatched_only_within_hotstart": bool,
    "init_trk_keep_alive": int,
    "max_trk_keep_alive": int,
    "min_trk_keep_alive": int,
    "suppress_overlapping_based_on_recent_occlusion_threshold": float,
    "decrease_trk_keep_alive_for_empty_masklets": bool,
    "fill_hole_area": int,
    "max_num_objects": int,
    "recondition_every_nth_frame": int,
    "high_conf_thresh": float,
    "high_iou_thresh": float,
    "low_res_mask_size": int,
}


def concept_manifest(video_model) -> dict:
    """The manifest's `concept` block (docs/bundle-format.md): every threshold and count of the
    checkpoint's Sam3VideoConfig that concept tracking follows, under the config's own names."""
    config = video_model.config
    return {name: kind(getattr(config, name)) for name, kind in CONCEPT_FIELDS.items()}


def image_position_encoding(video_model) -> torch.Tensor:
    """The tracker neck's sine position encoding of the coarsest (G x G) map, [1, C, G, G]: what
    the reference adds (x 0.1) to the current frame's features before its memory attention. A
    function of the configuration only."""
    tracker = video_model.tracker_model
    grid = tracker.prompt_encoder.image_embedding_size
    shape = torch.Size([1, tracker.hidden_dim, grid[0], grid[1]])
    device = tracker.no_memory_embedding.device
    return video_model.tracker_neck.position_encoding(shape, device, torch.float32).detach().clone()


def memory_position_encoding(tracker) -> torch.Tensor:
    """The memory encoder's sine position encoding of one memory, [1, M, G, G] (the reference's
    `maskmem_pos_enc`, identical for every frame and object)."""
    grid = tracker.prompt_encoder.image_embedding_size
    shape = torch.Size([1, tracker.mem_dim, grid[0], grid[1]])
    device = tracker.no_memory_embedding.device
    return tracker.memory_encoder.position_encoding(shape, device, torch.float32).detach().clone()


class MemoryAttention(nn.Module):
    """Conditions the current frame's features on the memory bank of B objects at once.

    in: current [1, C, G, G] (raw tracker_fpn_2), memory [B, NS, G*G, M], memory_tpos [B, NS]
    int64 (row of the temporal position table: num_maskmem - 1 for a conditioning frame, k - 1
    for the frame k steps away), memory_valid [B, NS], pointers [B, NP, C], pointer_offsets
    [B, NP] (temporal offset / (P - 1)), pointer_valid [B, NP].
    out: conditioned [B, C, G, G].
    attribute: no_memory_embedding [1, 1, C] (initial conditioning frames skip this module).

    Invalid slots may hold anything (they are zeroed, then masked); each object needs at least
    one valid key (every tracked object has a conditioning frame).
    """

    def __init__(self, video_model):
        super().__init__()
        tracker = video_model.tracker_model
        self.attention = tracker.memory_attention
        self.memory_temporal_positional_encoding = tracker.memory_temporal_positional_encoding
        self.pointer_position_projection = tracker.temporal_positional_encoding_projection_layer
        self.temporal_pointer_positions = bool(tracker.config.enable_temporal_pos_encoding_for_object_pointers)
        self.no_memory_embedding = tracker.no_memory_embedding
        self.hidden = int(tracker.hidden_dim)
        self.mem_dim = int(tracker.mem_dim)
        self.num_maskmem = int(tracker.num_maskmem)
        if self.hidden % self.mem_dim or self.hidden <= self.mem_dim:
            raise ValueError(
                f"tracker width {self.hidden} must be a multiple of the memory width {self.mem_dim} and larger"
            )
        # Constants of the configuration, [1, G*G, C] and [1, G*G, M] (token j = row j // G, column j % G).
        self.register_buffer("image_position", image_position_encoding(video_model).flatten(2).transpose(1, 2))
        self.register_buffer("memory_position", memory_position_encoding(tracker).flatten(2).transpose(1, 2))

    def _cross_attention(self, attention, query, key, value, rope, num_spatial, key_mask):
        """Sam3TrackerVideoRoPEAttention.forward (rope_k_repeat=True, the pointer tokens after the
        spatial ones excluded from RoPE) with an additive key mask."""
        batch, point_batch = query.shape[:2]
        heads, head_dim = attention.num_attention_heads, attention.head_dim
        shape = (batch * point_batch, -1, heads, head_dim)
        q = attention.q_proj(query).view(shape).transpose(1, 2)
        k = attention.k_proj(key).view(shape).transpose(1, 2)
        v = attention.v_proj(value).view(shape).transpose(1, 2)
        cos, sin = rope  # [1, G*G, D]
        q_rot = q.float()
        q = ((q_rot * cos) + (rotate_pairwise(q_rot) * sin)).type_as(q)
        # Every memory frame's token j gets the 2-D position of query token j (the reference tiles
        # cos/sin over the frames; broadcasting over a frame axis is the same product).
        spatial = k[:, :, :num_spatial, :]
        pointer_keys = k[:, :, num_spatial:, :]
        frames = spatial.reshape(batch * point_batch, heads, -1, cos.shape[-2], head_dim).float()
        frames = (frames * cos.unsqueeze(1)) + (rotate_pairwise(frames) * sin.unsqueeze(1))
        spatial = frames.reshape(spatial.shape).type_as(k)
        k = torch.cat([spatial, pointer_keys], dim=-2)
        implementation = attention.config._attn_implementation
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, _ = interface(
            attention, q, k, v, attention_mask=key_mask, dropout=0.0, scaling=attention.scaling, is_causal=False
        )
        out = out.reshape(batch, point_batch, -1, heads * head_dim).contiguous()
        return attention.o_proj(out)

    def forward(
        self,
        current: torch.Tensor,
        memory: torch.Tensor,
        memory_tpos: torch.Tensor,
        memory_valid: torch.Tensor,
        pointers: torch.Tensor,
        pointer_offsets: torch.Tensor,
        pointer_valid: torch.Tensor,
    ):
        batch, _, tokens, mem_dim = memory.shape
        hidden = current.shape[1]
        splits = hidden // mem_dim
        height, width = current.shape[-2:]

        # Spatial memories: zero the invalid slots (garbage stays out of the arithmetic), then
        # position = the memory encoder's sine encoding + the slot's temporal encoding.
        slot_valid = memory_valid > 0
        spatial = torch.where(slot_valid[:, :, None, None], memory, torch.zeros_like(memory))
        table = self.memory_temporal_positional_encoding.view(self.num_maskmem, mem_dim)
        temporal = table[memory_tpos.clamp(0, self.num_maskmem - 1)]  # [B, NS, M]
        spatial_pos = self.memory_position.unsqueeze(0) + temporal.unsqueeze(2)  # [B, NS, G*G, M]
        spatial = spatial.reshape(batch, -1, mem_dim)
        spatial_pos = spatial_pos.reshape(batch, -1, mem_dim)
        spatial_valid = slot_valid.repeat_interleave(tokens, dim=1)

        # Object pointers: each C-vector is split into S = C / M tokens (p0c0, p0c1, ...); every
        # chunk carries its pointer's projected 1-D sine encoding of the temporal offset.
        pointer_ok = pointer_valid > 0
        if self.temporal_pointer_positions:
            sine = get_1d_sine_pe(pointer_offsets, dim=hidden).to(pointers.dtype)
            pointer_pos = self.pointer_position_projection(sine)  # [B, NP, M]
        else:
            pointer_pos = pointers.new_zeros(pointers.shape[0], pointers.shape[1], mem_dim)
        pointer_tokens = torch.where(pointer_ok[:, :, None], pointers, torch.zeros_like(pointers))
        pointer_tokens = pointer_tokens.reshape(batch, -1, mem_dim)
        pointer_pos = pointer_pos.repeat_interleave(splits, dim=1)
        pointer_token_valid = pointer_ok.repeat_interleave(splits, dim=1)

        keys = torch.cat([spatial, pointer_tokens], dim=1).unsqueeze(1)  # [B, 1, Nk, M]
        key_pos = torch.cat([spatial_pos, pointer_pos], dim=1).unsqueeze(1)
        key_valid = torch.cat([spatial_valid, pointer_token_valid], dim=1)
        key_mask = torch.zeros(key_valid.shape, dtype=keys.dtype, device=keys.device)
        key_mask = key_mask.masked_fill(~key_valid, float("-inf"))[:, None, None, :]  # [B, 1, 1, Nk]
        num_spatial = spatial.shape[1]

        # Sam3TrackerVideoMemoryAttention.forward, batch first.
        output = current.flatten(2).transpose(1, 2)  # [1, G*G, C]
        output = output + 0.1 * self.image_position
        output = output.unsqueeze(1).expand(batch, -1, -1, -1)  # [B, 1, G*G, C]
        rope = self.attention.rotary_emb(output, self.attention.position_ids)
        for layer in self.attention.layers:
            query = layer.layer_norm1(output)
            query, _ = layer.self_attn(query=query, key=query, value=query, position_embeddings=rope)
            output = output + query
            query = layer.layer_norm2(output)
            query = self._cross_attention(
                layer.cross_attn_image, query, keys + key_pos, keys, rope, num_spatial, key_mask
            )
            output = output + query
            query = layer.layer_norm3(output)
            query = layer.linear2(layer.activation(layer.linear1(query)))
            output = output + query
        output = self.attention.layer_norm(output)
        return output.squeeze(1).transpose(1, 2).reshape(batch, hidden, height, width)


class TrackerDecoder(nn.Module):
    """The reference `_single_frame_forward` on memory-conditioned features, batched over objects.

    in: conditioned [B, C, G, G] (memory_attention's output, or tracker_fpn_2 +
    no_memory_embedding on an initial conditioning frame), tracker_fpn_0 [1, C/8, 4G, 4G],
    tracker_fpn_1 [1, C/4, 2G, 2G], points [B, 1, N, 2] (pixels of the R x R input),
    point_labels [B, 1, N] int64 (1/0 clicks, 2/3 box corners, -1 not-a-point).
    out: low_res_masks [B, 1, 4G, 4G] (-1024 where the object is absent), high_res_masks
    [B, 1, R, R], object_pointer [B, C] (the no-object pointer where absent),
    object_score_logits [B, 1], iou_scores [B, 1] (predicted IoU of the chosen mask).

    multimask: three masks, the best predicted IoU wins (mask and pointer token); else one mask
    with SAM's stability fallback. Written out step by step from the reference rather than calling
    `_single_frame_forward`, whose best-mask indexing only works for a batch of one (it
    broadcasts [B] against [B, 1] indices into a [B, B] selection); every step is the same
    computation on the same submodules.
    """

    def __init__(self, video_model, multimask_output: bool):
        super().__init__()
        tracker = video_model.tracker_model
        self.prompt_encoder = tracker.prompt_encoder
        self.mask_decoder = tracker.mask_decoder
        self.object_pointer_proj = tracker.object_pointer_proj
        self.no_object_pointer = tracker.no_object_pointer
        # A function of the configuration only: computed once at export, a constant in the graph.
        self.register_buffer("image_positions", tracker.get_image_wide_positional_embeddings().detach().clone())
        self.resolution = int(tracker.image_size)
        self.multimask_output = multimask_output

    def forward(self, conditioned, tracker_fpn_0, tracker_fpn_1, points, point_labels):
        return self.decode(conditioned, tracker_fpn_0, tracker_fpn_1, points, point_labels)

    def decode(self, conditioned, tracker_fpn_0, tracker_fpn_1, points, point_labels, input_masks=None):
        """forward, with the prompt encoder's optional dense mask prompt `input_masks`
        [B, 1, 4G, 4G] (TrackerMaskDecoder's)."""
        batch, hidden = conditioned.shape[:2]
        sparse, dense = self.prompt_encoder(
            input_points=points, input_labels=point_labels, input_boxes=None, input_masks=input_masks
        )
        masks, iou, tokens, scores = self.mask_decoder(
            image_embeddings=conditioned,
            image_positional_embeddings=self.image_positions.expand(batch, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
            high_resolution_features=[
                tracker_fpn_0.expand(batch, -1, -1, -1),
                tracker_fpn_1.expand(batch, -1, -1, -1),
            ],
        )  # masks [B, 1, K, 4G, 4G], iou [B, 1, K], tokens [B, 1, K, C], scores [B, 1, 1]
        appearing = scores > 0
        masks = torch.where(appearing[:, None, None], masks, NO_OBJ_SCORE)
        high_res = F.interpolate(
            masks.squeeze(1).float(), size=(self.resolution, self.resolution), mode="bilinear", align_corners=False
        ).unsqueeze(1).to(masks.dtype)
        if self.multimask_output:
            best = torch.argmax(iou, dim=-1, keepdim=True)  # [B, 1, 1]

            def pick(candidates):  # [B, 1, K, ...] -> [B, 1, ...], candidate `best`
                index = best.reshape(*best.shape, *([1] * (candidates.dim() - 3)))
                return torch.gather(candidates, 2, index.expand(-1, -1, -1, *candidates.shape[3:]))[:, :, 0]

            low_res, high_res, token = pick(masks), pick(high_res), pick(tokens)
            iou = torch.gather(iou, 2, best)
        else:
            low_res, high_res, token = masks[:, :, 0], high_res[:, :, 0], tokens[:, :, 0]
        pointer = self.object_pointer_proj(token)  # [B, 1, C]
        present = appearing.to(pointer.dtype)
        pointer = present * pointer
        pointer = pointer + (1 - present) * self.no_object_pointer
        return low_res, high_res, pointer.reshape(batch, hidden), scores.reshape(batch, 1), iou.reshape(batch, 1)


class TrackerMaskDecoder(nn.Module):
    """The reference `_use_mask_as_output`, batched over objects: a detection enters the tracker
    as a binary mask instead of clicks (Sam3VideoModel._tracker_add_new_objects).

    in: tracker_fpn_0 [1, C/8, 4G, 4G], tracker_fpn_1 [1, C/4, 2G, 2G] (through conv_s0 / conv_s1,
    as the vision encoder outputs them), tracker_fpn_2 [1, C, G, G] (raw: no memory, no
    no-memory embedding, as the reference passes it), mask_inputs [B, 1, 4G, 4G] (0 / 1).
    out: low_res_masks [B, 1, 4G, 4G], high_res_masks [B, 1, R, R], object_pointer [B, C],
    object_score_logits [B, 1] (+10 where the mask has a foreground pixel, else -10).

    The masks are the input itself: resized to R x R (bilinear, antialiased), x 20 - 10, and that
    resized back to 4G x 4G. The pointer comes from one SAM decoder pass on the raw features with
    the mask as dense prompt (`mask_downsample`, then resized to the prompt encoder's mask size),
    the dummy point (0, 0) labelled -1 and three masks (the reference's default
    `multimask_output=True`: the best predicted IoU picks the token); it is the no-object
    pointer where that decoder's own object score is <= 0 and again where the mask is empty.
    The reference's IoU output (all ones) is not an output. Written out on the reference
    submodules rather than calling `_use_mask_as_output`, whose `_single_frame_forward` indexes
    the best mask wrongly for a batch of more than one (see TrackerDecoder).
    """

    OUT_SCALE, OUT_BIAS = 20.0, -10.0  # the reference's constants: sigmoid(-10) = 4.5e-5

    def __init__(self, video_model):
        super().__init__()
        tracker = video_model.tracker_model
        self.decoder = TrackerDecoder(video_model, multimask_output=True)
        self.mask_downsample = tracker.mask_downsample
        self.no_object_pointer = tracker.no_object_pointer
        self.resolution = int(tracker.image_size)
        self.mask_input_size = tuple(int(s) for s in tracker.prompt_encoder.mask_input_size)

    def forward(self, tracker_fpn_0, tracker_fpn_1, tracker_fpn_2, mask_inputs):
        batch = mask_inputs.shape[0]
        masks = mask_inputs
        if tuple(masks.shape[-2:]) != (self.resolution, self.resolution):
            masks = F.interpolate(
                masks.float(), size=(self.resolution, self.resolution), align_corners=False, mode="bilinear",
                antialias=True,
            ).to(mask_inputs.dtype)
        high_res = masks * self.OUT_SCALE + self.OUT_BIAS
        low_res = F.interpolate(
            high_res.float(), size=self.mask_input_size, align_corners=False, mode="bilinear", antialias=True
        ).to(tracker_fpn_2.dtype)
        prompt = self.mask_downsample(masks.to(tracker_fpn_2.dtype))
        if tuple(prompt.shape[-2:]) != self.mask_input_size:
            prompt = F.interpolate(
                prompt.float(), size=self.mask_input_size, align_corners=False, mode="bilinear", antialias=True
            ).to(prompt.dtype)
        # _single_frame_forward without points: one point (0, 0) labelled -1.
        points = torch.zeros_like(mask_inputs[:, :, :1, :2])
        labels = -torch.ones_like(mask_inputs[:, :, :1, 0], dtype=torch.long)
        _, _, pointer, _, _ = self.decoder.decode(
            tracker_fpn_2.expand(batch, -1, -1, -1), tracker_fpn_0, tracker_fpn_1, points, labels, input_masks=prompt
        )
        appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[:, None].to(tracker_fpn_2.dtype)
        object_score_logits = self.OUT_SCALE * appearing + self.OUT_BIAS
        pointer = appearing * pointer
        pointer = pointer + (1 - appearing) * self.no_object_pointer.reshape(1, -1)
        return low_res, high_res, pointer, object_score_logits


class MemoryEncoder(nn.Module):
    """The reference `_encode_new_memory`, batched over objects, with the binarize switch as input.

    in: current [1, C, G, G] (raw tracker_fpn_2), high_res_masks [B, 1, H, W] (R x R from the
    decoders, or the 4G x 4G low-res masks concept tracking encodes; resized to 16G x 16G inside),
    object_score_logits [B, 1], binarize [1] (1: masks binarized at > 0, 0: sigmoid).
    out: memory [B, G*G, M] bfloat16.
    """

    def __init__(self, video_model):
        super().__init__()
        tracker = video_model.tracker_model
        self.memory_encoder = tracker.memory_encoder
        self.occlusion_spatial_embedding_parameter = tracker.occlusion_spatial_embedding_parameter
        self.scale = float(tracker.config.sigmoid_scale_for_mem_enc)
        self.bias = float(tracker.config.sigmoid_bias_for_mem_enc)
        self.memory_input_size = tuple(4 * int(s) for s in tracker.prompt_encoder.mask_input_size)

    def forward(self, current, high_res_masks, object_score_logits, binarize):
        batch = high_res_masks.shape[0]
        masks = high_res_masks
        if tuple(masks.shape[2:]) != self.memory_input_size:
            masks = F.interpolate(
                masks.float(), size=self.memory_input_size, align_corners=False, mode="bilinear", antialias=True
            ).to(high_res_masks.dtype)
        binary = (masks > 0).to(masks.dtype)
        mask_for_mem = torch.where(binarize.reshape(1, 1, 1, 1) > 0, binary, torch.sigmoid(masks))
        mask_for_mem = mask_for_mem * self.scale
        mask_for_mem = mask_for_mem + self.bias
        features, _ = self.memory_encoder(current.expand(batch, -1, -1, -1), mask_for_mem)
        if self.occlusion_spatial_embedding_parameter is not None:
            appearing = (object_score_logits > 0).float().reshape(batch, 1, 1, 1)
            occlusion = self.occlusion_spatial_embedding_parameter[..., None, None].expand(*features.shape)
            features = features + (1 - appearing) * occlusion
        return features.to(torch.bfloat16).flatten(2).transpose(1, 2).contiguous()
