"""Small random-weight SAM3 configurations for tests, demos and benchmarks.

Each preset is a full Sam3VideoConfig (detector + tracker) of the real architecture with small
sizes. Constraints of the architecture honoured here: resolution divisible by the patch size,
the window size divides the patch grid, the grid sizes follow from the resolution, and the FPN
width (= the tracker width) is a multiple of 64 and greater than 64: the tracker's memory is 64
wide and transformers' video tracker splits each object pointer into width / 64 memory tokens
(at width 64 it fails on the second frame of a video).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # 224 px, 16 x 16 patch grid, width 128.
    "tiny": dict(
        resolution=224, patch=14, window=8, vit_width=64, vit_layers=4, vit_heads=4,
        global_layers=[1, 3], width=128, heads=4, ffn=128, text_width=64, text_layers=2,
        geo_layers=2, enc_layers=2, dec_layers=2, queries=20,
    ),
    # The demo: the real input size (1008 px, 72 x 72 patch grid, 288 px masks) on a tiny model,
    # so the default IMAGE_MODEL_RESOLUTION serves it.
    "demo": dict(
        resolution=1008, patch=14, window=24, vit_width=64, vit_layers=4, vit_heads=4,
        global_layers=[1, 3], width=128, heads=4, ffn=128, text_width=64, text_layers=2,
        geo_layers=2, enc_layers=2, dec_layers=2, queries=50,
    ),
    # A second shape: 280 px (20 x 20 grid), width 128, more queries, different depths.
    "tiny-b": dict(
        resolution=280, patch=14, window=10, vit_width=96, vit_layers=3, vit_heads=3,
        global_layers=[2], width=128, heads=8, ffn=256, text_width=96, text_layers=3,
        geo_layers=1, enc_layers=3, dec_layers=3, queries=32,
    ),
}


# The real architecture at its real size (ViT-L/14 at 1008 px, 200 queries), random weights:
# for benchmarks where the gated checkpoint is not available.
FULL_PRESET = "full"


def tiny_config(preset: str = "tiny"):
    """Builds the Sam3VideoConfig of a preset ("full": transformers' defaults, i.e. facebook/sam3)."""
    from transformers import Sam3VideoConfig

    if preset == FULL_PRESET:
        return Sam3VideoConfig()
    p = PRESETS[preset]
    res, patch = p["resolution"], p["patch"]
    grid = res // patch
    backbone = dict(
        hidden_size=p["vit_width"], intermediate_size=2 * p["vit_width"],
        num_hidden_layers=p["vit_layers"], num_attention_heads=p["vit_heads"], image_size=res,
        patch_size=patch, window_size=p["window"], global_attn_indexes=p["global_layers"],
        pretrain_image_size=patch * (grid // 2),
    )
    vision = dict(
        backbone_config=backbone, fpn_hidden_size=p["width"],
        backbone_feature_sizes=[[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]],
    )
    width, heads, ffn = p["width"], p["heads"], p["ffn"]
    detector = dict(
        vision_config=vision,
        text_config=dict(
            vocab_size=49408, hidden_size=p["text_width"], intermediate_size=2 * p["text_width"],
            projection_dim=p["text_width"], num_hidden_layers=p["text_layers"],
            num_attention_heads=4, max_position_embeddings=32,
        ),
        geometry_encoder_config=dict(
            hidden_size=width, num_layers=p["geo_layers"], num_attention_heads=heads, intermediate_size=ffn
        ),
        detr_encoder_config=dict(
            hidden_size=width, num_layers=p["enc_layers"], num_attention_heads=heads, intermediate_size=ffn
        ),
        detr_decoder_config=dict(
            hidden_size=width, num_layers=p["dec_layers"], num_queries=p["queries"],
            num_attention_heads=heads, intermediate_size=ffn,
        ),
        mask_decoder_config=dict(hidden_size=width, num_attention_heads=heads),
    )
    tracker = dict(
        vision_config=vision, image_size=res,
        memory_attention_hidden_size=width, memory_encoder_hidden_size=width,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=2 * width,
        memory_attention_feed_forward_hidden_size=ffn, memory_attention_rope_feat_sizes=[grid, grid],
        prompt_encoder_config=dict(hidden_size=width),
        mask_decoder_config=dict(
            hidden_size=width, mlp_dim=ffn, num_attention_heads=heads, iou_head_hidden_dim=width
        ),
    )
    # low_res_mask_size: the side of the tracker's low-res masks (4G); the default, 288, is the
    # real model's.
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)
