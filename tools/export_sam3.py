#!/usr/bin/env python3
"""Exports a SAM3 checkpoint to the TorchScript bundle the server loads (docs/bundle-format.md).

  export_sam3.py --model facebook/sam3 --out weights/sam3 [--device cuda:0]
  export_sam3.py --model /path/to/local/checkpoint --out weights/sam3
  export_sam3.py --tiny-random --seed 0 [--preset tiny] --out weights/sam3
  export_sam3.py ... --dtype bfloat16     (modules computing in bf16, under autocast)
  export_sam3.py --from-bundle weights/sam3 --dtype bfloat16 --out weights/sam3-bf16   (random bundles)

--model takes what transformers' Sam3VideoModel.from_pretrained takes (a hub id needs network
access and, for the gated facebook/sam3, a Hugging Face token: `huggingface-cli login` or HF_TOKEN).
--tiny-random builds a small random-weight model of the same architecture, saves its HF config
and weights under <out>/hf and exports it: the fixture for tests and the demo bundle.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sam3_tools.precision import DTYPES, TRACE_TOLERANCE, at_precision, freeze  # noqa: E402
from sam3_tools.vocab import VOCAB_FILE, open_clip_vocab  # noqa: E402

FORMAT_VERSION = 4
EXPORTER_VERSION = 8
# open_clip's SimpleTokenizer reads lines [1, 49152 - 256 - 2 + 1) of the vocabulary file.
NUM_MERGES = 49152 - 256 - 2


def log(message: str) -> None:
    print(f"[export] {message}", flush=True)


def write_vocabulary(source: Path | None, bpe: Path | None, out: Path) -> None:
    """Copies the vocabulary in open_clip's .txt.gz format into the bundle.

    Sources, in order: --bpe; the checkpoint's own bpe_simple_vocab_16e6.txt.gz; the
    checkpoint's HF merges.txt (same merge list, converted); the open_clip package copy.
    """
    target = out / VOCAB_FILE
    if bpe is not None:
        shutil.copyfile(bpe, target)
        log(f"vocabulary from --bpe {bpe}")
        return
    if source is not None and (source / VOCAB_FILE).is_file():
        shutil.copyfile(source / VOCAB_FILE, target)
        log("vocabulary from the checkpoint")
        return
    if source is not None and (source / "merges.txt").is_file():
        lines = (source / "merges.txt").read_text(encoding="utf-8").split("\n")
        header, merges = lines[0], [line for line in lines[1:] if line]
        if len(merges) < NUM_MERGES:
            raise SystemExit(f"merges.txt has {len(merges)} merges, expected {NUM_MERGES}")
        text = "\n".join([header] + merges[:NUM_MERGES]) + "\n"
        with gzip.open(target, "wt", encoding="utf-8") as handle:
            handle.write(text)
        log("vocabulary converted from the checkpoint's merges.txt")
        return
    fallback = open_clip_vocab()
    if fallback is None:
        raise SystemExit(
            "no CLIP vocabulary found: pass --bpe <bpe_simple_vocab_16e6.txt.gz> "
            "(pip install --no-deps open_clip_torch ships one)"
        )
    shutil.copyfile(fallback, target)
    log(f"vocabulary from {fallback}")


def state_checksum(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def randomize_zero_parameters(model) -> None:
    """transformers initializes some parameters to zero (biases, the tracker's no-memory
    embedding, ...); a random test model gives them random values too, so that parity tests
    exercise every parameter's path."""
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 0 and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


# Object-score bias of random test models (see bias_object_scores).
RANDOM_OBJECT_SCORE_BIAS = 2.0
OBJECT_SCORE_BIAS = "tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias"


def bias_object_scores(model) -> None:
    """Random bundles only: sets the bias of the last layer of the tracker's object-score head
    (`pred_obj_score_head.proj_out`) to +RANDOM_OBJECT_SCORE_BIAS.

    With random weights the head's output hardly depends on its input and sits near 0, so
    objects are called absent (masks filled with -1024, the no-object pointer) on most frames
    and tracked masks are empty. A positive bias keeps the object present, so clicks give
    non-empty masks and tracking keeps producing masks; the graphs are unchanged and the
    reference (built from the bundle's hf/ copy) has the same bias."""
    parameter = dict(model.named_parameters())[OBJECT_SCORE_BIAS]
    with torch.no_grad():
        parameter.fill_(RANDOM_OBJECT_SCORE_BIAS)


# Random bundles only: factors applied to the tracker weights through which memories, their
# temporal positions and object pointers reach a tracked frame's output (see
# scale_memory_paths). Keys are regular expressions over parameter names under tracker_model.;
# each must match at least one parameter.
RANDOM_MEMORY_PATH_SCALES: dict[str, float] = {
    # Cross-attention of the memory attention to the memories and pointers: queries and keys
    # sharp enough that the temporal encodings move the attention, values and output large
    # enough that what is attended changes the conditioned features.
    r"memory_attention\.layers\.\d+\.cross_attn_image\.(q|k)_proj\.weight": 8.0,
    r"memory_attention\.layers\.\d+\.cross_attn_image\.(v|o)_proj\.weight": 4.0,
    # Temporal position table of the spatial memories ([num_maskmem, 1, 1, 64]): unit scale,
    # like the memories' sine position encoding it is added to.
    r"memory_temporal_positional_encoding": 50.0,
    # Projection of the object pointers' 1-D sine encoding of their temporal offset.
    r"temporal_positional_encoding_projection_layer\.weight": 32.0,
    # Object pointer MLP (3 layers): pointers that depend on the frame's mask token.
    r"object_pointer_proj\.(proj_in|layers\.\d+|proj_out)\.weight": 8.0,
    # The pointer of an absent object, at the scale of the pointers it stands for.
    r"no_object_pointer": 100.0,
    # Memory encoder: the frame's features and the mask both visible in the memory.
    r"memory_encoder\.feature_projection\.weight": 4.0,
    r"memory_encoder\.projection\.weight": 4.0,
    # Added to the memory of an absent object, at the scale of the memories.
    r"occlusion_spatial_embedding_parameter": 10.0,
}


def scale_memory_paths(model) -> None:
    """Random bundles only, a test aid: multiplies the tracker weights of
    RANDOM_MEMORY_PATH_SCALES by their factors (deterministic: no random draw).

    At random init (std 0.02) the memory attention's cross-attention is nearly uniform and its
    output tiny, the temporal position table and the pointers' temporal encoding hardly change
    the keys, and the pointers hardly depend on the frame: a tracked frame's mask barely
    depends on which memories and pointers it attends to, at which temporal positions, so a
    parity test against the reference would pass with wrong memory bookkeeping. Scaled, each
    bookkeeping rule (memory selection, temporal rows, pointers and their offsets, the
    conditioning-frame selection, the binarize flag) changes some tracked mask by more than 1%
    IoU, while float noise does not (tools/tests/test_random_bundle_sensitivity.py). Only the
    tracker's memory paths change: image segmentation and initial conditioning frames do not."""
    import re

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for pattern, factor in RANDOM_MEMORY_PATH_SCALES.items():
            names = [name for name in parameters if re.fullmatch("tracker_model." + pattern, name)]
            if not names:
                raise RuntimeError(f"no tracker parameter matches {pattern!r}")
            for name in names:
                parameters[name].mul_(factor)


# Random bundles only: the detector weights that make a random detector find a few instances,
# at places that change as the picture changes (see make_detections). Keys are regular
# expressions over parameter names under detector_model.; each must match a parameter.
RANDOM_DETECTION_SCALES: dict[str, float] = {
    # The queries' reference boxes (sigmoid of a [Q, 4] table): spread over the image instead of
    # all centred and half the image wide.
    r"detr_decoder\.reference_points\.weight": 50.0,
    # The box-relative position bias of the decoder's cross-attention to the image: sharp, so
    # each query looks at its own region.
    r"detr_decoder\.box_rpb_embed_(x|y)\.layer(1|2)\.weight": 100.0,
    # What the cross-attention brings from that region outweighs the query's own state.
    r"detr_decoder\.layers\.\d+\.vision_cross_attn\.(v|o)_proj\.weight": 16.0,
    # The mask logits' spread (query embedding . pixel embedding).
    r"mask_decoder\.mask_embedder\.layers\.2\.(weight|bias)": 100.0,
}
# Directions of the queries' common state projected out of the query scores.
RANDOM_QUERY_COMMON_DIRECTIONS = 24
# Standard deviation and mean of the query logits over the calibration inputs.
RANDOM_QUERY_LOGIT_STD = 2.5
RANDOM_QUERY_LOGIT_MEAN = -1.5
# The presence logit's bias: sigmoid 0.80, so a score > 0.7 needs a query logit > 1.95 and a
# score > 0.5 one > 0.51.
RANDOM_PRESENCE_BIAS = 1.4
PRESENCE_BIAS = "detector_model.detr_decoder.presence_head.layer3.bias"
# The share of a mask's pixels with a positive logit, over the calibration inputs.
RANDOM_MASK_AREA = 0.15
# Calibration prompts: the CLIP token ids (between BOS and EOS) of "object", "shape", "thing"
# and "a red disc".
CALIBRATION_PROMPTS = [[14115], [6448], [946], [320, 736, 10712]]
CALIBRATION_SCENES = 6
CALIBRATION_NOISE_PICTURES = 16


def calibration_pictures(size: int) -> list[torch.Tensor]:
    """make_detections' calibration pictures, normalized [1, 3, size, size]: first
    CALIBRATION_SCENES scenes of the kind the tests' synthetic videos show (coloured discs and
    squares on a graded background), then plain colours, linear gradients and smooth random
    pictures (a fixed generator, whatever the model's seed)."""
    ramp = torch.linspace(-1.0, 1.0, size)
    yy, xx = ramp.reshape(size, 1).expand(size, size), ramp.reshape(1, size).expand(size, size)
    colours = [(0.8, -0.8, -0.8), (-0.8, 0.6, -0.6), (-0.7, -0.7, 0.8), (0.8, 0.7, -0.8)]
    background = torch.stack([-0.35 + 0.12 * xx, -0.3 + 0.12 * yy, torch.full_like(xx, -0.3)])
    pictures = []
    for layout in range(CALIBRATION_SCENES):
        picture = background.clone()
        for index, colour in enumerate(colours[: 2 + layout % 3]):
            cx, cy = ((index + layout) % 4 - 1.5) / 2.2, ((index * 3 + layout) % 4 - 1.5) / 2.2
            if (index + layout) % 2:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= 0.06
            else:
                inside = ((xx - cx).abs() <= 0.2) & ((yy - cy).abs() <= 0.2)
            picture[:, inside] = torch.tensor(colour).reshape(3, 1)
        pictures.append(picture[None])
    pictures += [torch.tensor(c).reshape(1, 3, 1, 1).expand(1, 3, size, size) for c in colours]
    pictures += [torch.full((1, 3, size, size), v) for v in (-0.5, 0.0, 0.5)]
    for slope_x, slope_y in (((0.5, 0, 0), (0, 0.5, 0)), ((0, 0.5, 0.5), (0.5, 0, 0)), ((0.5, 0.5, 0.5), (0, 0, 0))):
        pictures.append(
            (torch.tensor(slope_x).reshape(3, 1, 1) * xx + torch.tensor(slope_y).reshape(3, 1, 1) * yy)[None]
        )
    generator = torch.Generator().manual_seed(0)
    for _ in range(CALIBRATION_NOISE_PICTURES):
        coarse = torch.rand(1, 3, 6, 6, generator=generator) * 1.6 - 0.8
        pictures.append(
            torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        )
    return [picture.contiguous() for picture in pictures]


@torch.no_grad()
def calibration_queries(detector) -> list[tuple]:
    """For every calibration picture and prompt (picture by picture): the detector's last decoder
    states [Q, D] (what the query scores are computed from), the text features and mask the
    scores take, and, for the scenes only, every 4th row and column of the mask logits
    [Q, M / 4, M / 4] (None for the other pictures)."""
    from sam3_tools.patches import install_roi_align

    install_roi_align()  # the geometry encoder (the padding box) needs roi_align
    config = detector.config
    vit = config.vision_config.backbone_config
    size = vit.image_size if isinstance(vit.image_size, int) else vit.image_size[0]
    context = config.text_config.max_position_embeddings
    prompts = []
    for tokens in CALIBRATION_PROMPTS:
        ids = torch.full((1, context), 49407, dtype=torch.long)
        ids[0, 0] = 49406
        ids[0, 1 : 1 + len(tokens)] = torch.tensor(tokens)
        mask = torch.zeros(1, context, dtype=torch.long)
        mask[0, : len(tokens) + 2] = 1
        prompts.append((ids, mask))
    captured = []
    hook = detector.dot_product_scoring.register_forward_hook(
        lambda module, args, kwargs, output: captured.append(
            (kwargs["decoder_hidden_states"][-1, 0], kwargs["text_features"], kwargs["text_mask"])
        ),
        with_kwargs=True,
    )
    try:
        for index, pixels in enumerate(calibration_pictures(size)):
            embeds = detector.get_vision_features(pixel_values=pixels)
            for ids, mask in prompts:
                # A text-only prompt with one padding box, as the bundle's detector takes it.
                masks = detector(
                    vision_embeds=embeds, input_ids=ids, attention_mask=mask, input_boxes=torch.zeros(1, 1, 4),
                    input_boxes_labels=torch.full((1, 1), -10, dtype=torch.long),
                ).pred_masks[0]
                captured[-1] = (*captured[-1], masks[:, ::4, ::4].clone() if index < CALIBRATION_SCENES else None)
    finally:
        hook.remove()
    return captured


def make_detections(model) -> None:
    """Random bundles only, a test aid: a detector that detects a few instances.

    At random init (std 0.02) every query scores about sigmoid(0) x sigmoid(0) = 0.25 on any
    picture: below transformers' `score_threshold_detection` (0.5) and `new_det_thresh` (0.7), so
    concept tracking would never see an object; and the scores hardly depend on the picture,
    since every query looks at the whole image with a near-uniform cross-attention. Here:
    - the weights of RANDOM_DETECTION_SCALES are multiplied by their factors: each query looks
      at its own region and its state depends on what is there;
    - the query scores (logit = <query_proj(state), text_proj(text)> / sqrt(D)): the queries'
      states share a large common part, whose product with the text decides whether a text
      gets no detection or all of them. The RANDOM_QUERY_COMMON_DIRECTIONS principal directions
      of the mean state over the calibration inputs (calibration_pictures x
      CALIBRATION_PROMPTS) are projected out of `query_proj`; its output component 0 and
      `text_proj`'s are given over to a constant (both weights' row 0 zeroed, the biases' 0
      set), the other bias components zeroed; then the weight is scaled and the constant set so
      that the logits over the calibration inputs have mean RANDOM_QUERY_LOGIT_MEAN and
      standard deviation RANDOM_QUERY_LOGIT_STD. A few queries per picture stand out, which
      ones depending on the picture;
    - the presence logit's bias is RANDOM_PRESENCE_BIAS;
    - the mask logits are shifted (through the instance projection's bias, along the mask
      embedder's output bias) so that over the calibration inputs a share RANDOM_MASK_AREA of
      them is positive: masks of some 5-30 % of the image instead of a few pixels.
    Deterministic (no random draw; the calibration is a fixed computation); the graphs are
    unchanged."""
    import re

    parameters = dict(model.named_parameters())
    detector = model.detector_model
    scoring = detector.dot_product_scoring
    with torch.no_grad():
        for pattern, factor in RANDOM_DETECTION_SCALES.items():
            names = [name for name in parameters if re.fullmatch("detector_model." + pattern, name)]
            if not names:
                raise RuntimeError(f"no detector parameter matches {pattern!r}")
            for name in names:
                parameters[name].mul_(factor)
        parameters[PRESENCE_BIAS].fill_(RANDOM_PRESENCE_BIAS)

        calibration = calibration_queries(detector)
        scenes = calibration[: CALIBRATION_SCENES * len(CALIBRATION_PROMPTS)]
        mask_logits = torch.stack([masks for _, _, _, masks in scenes]).flatten()
        shift = -torch.quantile(mask_logits[:: 1 + mask_logits.numel() // 4_000_000], 1 - RANDOM_MASK_AREA)
        decoder = detector.mask_decoder
        direction = decoder.mask_embedder.layers[2].bias
        decoder.instance_projection.bias.add_(shift * direction / direction.dot(direction))

        states = torch.stack([state for state, _, _, _ in calibration])  # [inputs, Q, D]
        common = torch.linalg.svd(states.mean(1), full_matrices=False).Vh[:RANDOM_QUERY_COMMON_DIRECTIONS]
        query, text = scoring.query_proj, scoring.text_proj
        query.weight.sub_((query.weight @ common.T) @ common)
        query.bias.zero_()
        query.weight[0] = 0.0
        text.weight[0] = 0.0
        text.bias[0] = 1.0
        # The logits now, without the constant (query.bias[0] = 0).
        logits = []
        for state, features, mask, _ in scenes:
            pooled = scoring._pool_text_features(
                scoring.text_mlp_out_norm(scoring.text_mlp(features) + features), mask
            )
            logits.append(query(state) @ text(pooled)[0] * scoring.scale)
        logits = torch.stack(logits)
        factor = RANDOM_QUERY_LOGIT_STD / logits.std().item()
        query.weight.mul_(factor)
        query.bias[0] = (RANDOM_QUERY_LOGIT_MEAN - factor * logits.mean().item()) / scoring.scale


def build_random_model(preset: str, seed: int):
    """The random-weight Sam3VideoModel of a --tiny-random export (before its hf/ copy is saved)."""
    from transformers import Sam3VideoModel

    from sam3_tools.configs import tiny_config

    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_config(preset)).eval()
    randomize_zero_parameters(model)
    bias_object_scores(model)
    scale_memory_paths(model)
    make_detections(model)
    return model


def resolve_source(model_arg: str) -> Path | None:
    """The local directory of a checkpoint (for its vocabulary), if there is one."""
    path = Path(model_arg)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_arg, allow_patterns=["*.json", "*.txt", "*.gz"]))
    except Exception:  # no network / not a hub id: the vocabulary must then come from --bpe
        return None


# The vision trunk's AOTInductor package (--compile; docs/bundle-format.md, "Compiled trunk").
COMPILED_TRUNK = "vision_trunk.pt2"
# The batch sizes the compiled trunk takes (the engine's largest image batch is 64).
COMPILED_MAX_BATCH = 64
# The x86 instruction sets that the package's native code may use, as /proc/cpuinfo names them
# (pni is SSE3): AOTInductor compiles it with -march=native. The manifest lists those the
# exporting machine has (compiled_cpu_flags), and the core refuses the package on a CPU that
# lacks one.
ISA_FLAGS = frozenset(
    "pni ssse3 sse4_1 sse4_2 popcnt abm movbe bmi1 bmi2 adx fma f16c avx avx2 aes pclmulqdq "
    "sha_ni gfni vaes vpclmulqdq avx_vnni avx512f avx512cd avx512dq avx512bw avx512vl avx512ifma "
    "avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq avx512_bf16 avx512_fp16 "
    "amx_tile amx_int8 amx_bf16 amx_fp16".split()
)


def host_isa_flags() -> list[str]:
    """The ISA_FLAGS this machine's CPU has (none where /proc/cpuinfo has no flags line)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        if line.startswith("flags") and ":" in line:
            return sorted(ISA_FLAGS & set(line.split(":", 1)[1].split()))
    return []


def compile_trunk(trunk, pixels: torch.Tensor, package: Path, wrapped: bool):
    """`trunk` exported (torch.export, a batch dimension of 1 to COMPILED_MAX_BATCH) and compiled
    into an AOTInductor package at `package`; returns the package loaded back, to be checked.
    `wrapped`: `trunk` is precision.Autocast, whose forward takes *inputs."""
    batch = torch.export.Dim("B", min=1, max=COMPILED_MAX_BATCH)
    # A batch of 2: an example batch of 1 would be specialized to 1.
    example = (pixels.repeat(2, 1, 1, 1),)
    shapes = (({0: batch},),) if wrapped else ({0: batch},)
    exported = torch.export.export(trunk, example, dynamic_shapes=shapes)
    # Inductor's freezing folds the weights into constants, so their casts to the reduced dtype
    # are done once at compile time, not on every call (4 ViT-L layers, bf16: 1.21x faster).
    path = torch._inductor.aoti_compile_and_package(
        exported, package_path=str(package), inductor_configs={"freezing": True}
    )
    return torch._inductor.aoti_load_package(path)


def spec(name: str, shape: list, dtype: str) -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def export(args: argparse.Namespace) -> None:
    from transformers import Sam3VideoModel, __version__ as transformers_version

    from sam3_tools.modules import Detector, PointDecoder, TextEncoder, traceable_geometry_encoder, vision_parts
    from sam3_tools.patches import install_roi_align
    from sam3_tools.tracker_modules import (
        MemoryAttention,
        MemoryEncoder,
        TrackerDecoder,
        TrackerMaskDecoder,
        concept_manifest,
        memory_slots,
        tracker_geometry,
        tracker_manifest,
    )

    install_roi_align()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    started = time.time()

    if args.tiny_random:
        model = build_random_model(args.preset, args.seed)
        model_id = f"tiny-random-{args.preset}"
        hf_dir = out / "hf"
        model.save_pretrained(hf_dir)
        log(f"built random-weight model '{args.preset}' (seed {args.seed}), saved to {hf_dir}")
        source, seed, random_weights = None, args.seed, True
        checksum = state_checksum(model)
    elif args.from_bundle:
        bundle_dir = Path(args.from_bundle)
        previous = json.loads((bundle_dir / "manifest.json").read_text())["model"]
        if not previous["random_weights"] or not (bundle_dir / "hf").is_dir():
            raise SystemExit(f"--from-bundle {bundle_dir}: not a --tiny-random bundle with its hf/ copy")
        model = Sam3VideoModel.from_pretrained(bundle_dir / "hf").eval()
        checksum = state_checksum(model)
        if checksum != previous["checksum"]:
            raise SystemExit(f"--from-bundle {bundle_dir}: hf/ does not hold the weights of its manifest")
        model_id, seed = previous["id"], previous["seed"]
        log(f"loaded the random-weight model of {bundle_dir}")
        source, random_weights = bundle_dir, True  # the source of its vocabulary
    else:
        log(f"loading {args.model} ...")
        model = Sam3VideoModel.from_pretrained(args.model).eval()
        model_id = args.model.rstrip("/").split("/")[-1] if Path(args.model).is_dir() else args.model
        source, seed, random_weights = resolve_source(args.model), None, False
        checksum = state_checksum(model)
    model.to(device)

    det_cfg = model.config.detector_config
    vit = det_cfg.vision_config.backbone_config
    resolution = vit.image_size if isinstance(vit.image_size, int) else vit.image_size[0]
    patch = vit.patch_size if isinstance(vit.patch_size, int) else vit.patch_size[0]
    grid = resolution // patch
    width = det_cfg.detr_encoder_config.hidden_size
    queries = det_cfg.detr_decoder_config.num_queries
    context = det_cfg.text_config.max_position_embeddings
    tracker_width = model.config.tracker_config.mask_decoder_config.hidden_size
    log(f"resolution {resolution}, patch {patch}, width {width}, queries {queries}, context {context}")

    # Each module runs at the bundle's precision (sam3_tools/precision.py); its interface does not.
    def at_dtype(module, output_dtype=torch.float32):
        return at_precision(module.eval(), args.dtype, device, output_dtype)

    trunk, detector_neck, tracker_neck = (at_dtype(part) for part in vision_parts(model))
    text = at_dtype(TextEncoder(model.detector_model))
    detector = at_dtype(Detector(model.detector_model))
    point_decoders = {
        "point_decoder": at_dtype(PointDecoder(model, multimask_output=False)),
        "point_decoder_multimask": at_dtype(PointDecoder(model, multimask_output=True)),
    }
    tracker = model.tracker_model
    geometry = tracker_geometry(tracker)
    mem_dim, memory_size = geometry["mem_dim"], geometry["memory_input_size"]
    num_memory_slots, num_pointer_slots = memory_slots(tracker)
    memory_attention = at_dtype(MemoryAttention(model))
    tracker_decoders = {
        "tracker_decoder": at_dtype(TrackerDecoder(model, multimask_output=False)),
        "tracker_decoder_multimask": at_dtype(TrackerDecoder(model, multimask_output=True)),
    }
    # Memories are bf16 at every precision, as transformers stores them.
    memory_encoder = at_dtype(MemoryEncoder(model), torch.bfloat16)
    mask_decoder = at_dtype(TrackerMaskDecoder(model))
    if geometry["resolution"] != resolution or geometry["grid"] != grid or geometry["hidden"] != tracker_width:
        raise SystemExit(f"tracker geometry {geometry} does not match the image modules")

    pixels = torch.randn(1, 3, resolution, resolution, device=device)
    ids = torch.full((2, context), 49407, dtype=torch.long, device=device)
    ids[:, 0] = 49406
    mask = torch.zeros(2, context, dtype=torch.long, device=device)
    mask[:, :3] = 1
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4]], [[0.3, 0.6, 0.2, 0.5]]], device=device)
    labels = torch.tensor([[1], [-10]], dtype=torch.long, device=device)

    with torch.inference_mode(False), torch.no_grad():
        t = time.time()
        traced_vision = {"vision_trunk": torch.jit.trace(trunk, (pixels,), check_trace=False)}
        vision_features = trunk(pixels)
        for name, neck in (("detector_neck", detector_neck), ("tracker_neck", tracker_neck)):
            traced_vision[name] = torch.jit.trace(neck, (vision_features,), check_trace=False)
        maps = (*detector_neck(vision_features), *tracker_neck(vision_features))
        log(f"traced the vision trunk and necks in {time.time() - t:.1f}s")
        t = time.time()
        traced_text = torch.jit.trace(text, (ids, mask), check_trace=False)
        features = text(ids, mask)
        log(f"traced text_encoder in {time.time() - t:.1f}s")
        t = time.time()
        det_inputs = (maps[0], maps[1], maps[2], features, mask, boxes, labels)
        with traceable_geometry_encoder(model.detector_model):
            traced_detector = torch.jit.trace(detector, det_inputs, check_trace=False)
        log(f"traced detector in {time.time() - t:.1f}s")
        # A click and a box (corners labelled 2 and 3), in pixels of the R x R input.
        points = torch.tensor([[[[0.3, 0.4], [0.2, 0.2], [0.7, 0.8]]]], device=device) * resolution
        point_labels = torch.tensor([[[1, 2, 3]]], dtype=torch.long, device=device)
        traced_points = {
            name: torch.jit.trace(module, (maps[3], maps[4], maps[5], points, point_labels), check_trace=False)
            for name, module in point_decoders.items()
        }
        log("traced point decoders")

        # Tracker modules, traced with two objects (and three points), checked below with others.
        t = time.time()
        tracker_gen = torch.Generator(device="cpu").manual_seed(0)

        # The slot counts are capacities: one graph takes any NS <= memory_slots and
        # NP <= pointer_slots (the core passes only the slots a call uses), checked below.
        def memory_inputs(objects: int, slots: int = num_memory_slots, pointer_slots: int = num_pointer_slots):
            def rand(*shape):
                return torch.rand(*shape, generator=tracker_gen).to(device)

            valid = (rand(objects, slots) > 0.4).float()
            valid[:, 0] = 1.0
            return (
                maps[5],
                torch.randn(objects, slots, grid * grid, mem_dim, generator=tracker_gen).to(device),
                torch.randint(0, geometry["num_maskmem"], (objects, slots), generator=tracker_gen).to(device),
                valid,
                torch.randn(objects, pointer_slots, tracker_width, generator=tracker_gen).to(device),
                rand(objects, pointer_slots),
                (rand(objects, pointer_slots) > 0.5).float(),
            )

        def decoder_inputs(objects: int, clicks: int):
            conditioned = torch.randn(objects, tracker_width, grid, grid, generator=tracker_gen).to(device)
            where = torch.rand(objects, 1, clicks, 2, generator=tracker_gen).to(device) * resolution
            kinds = torch.tensor([1, 0, 2, 3, -1], dtype=torch.long, device=device)
            what = kinds[torch.randint(0, 5, (objects, 1, clicks), generator=tracker_gen)].to(device)
            return conditioned, maps[3], maps[4], where, what

        # Masks R x R (the decoders') or 4G x 4G (concept tracking's low-res masks).
        def encoder_inputs(objects: int, binarize: float, side: int = resolution):
            masks = torch.randn(objects, 1, side, side, generator=tracker_gen).to(device) * 8
            scores = torch.randn(objects, 1, generator=tracker_gen).to(device)
            return maps[5], masks, scores, torch.tensor([binarize], device=device)

        # Binary masks (0 / 1 float32) of random discs; `empty` objects get an all-zero mask.
        def mask_decoder_inputs(objects: int, empty: tuple[int, ...] = ()):
            side = 4 * grid
            yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
            centres = torch.rand(objects, 2, generator=tracker_gen) * side
            radii = 2 + torch.rand(objects, generator=tracker_gen) * side / 3
            inside = (yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2 <= radii[:, None, None] ** 2
            masks = inside.float()[:, None]
            masks[list(empty)] = 0.0
            return maps[3], maps[4], maps[5], masks.to(device)

        traced_tracker = {"memory_attention": torch.jit.trace(memory_attention, memory_inputs(2), check_trace=False)}
        for name, module in tracker_decoders.items():
            traced_tracker[name] = torch.jit.trace(module, decoder_inputs(2, 3), check_trace=False)
        traced_tracker["memory_encoder"] = torch.jit.trace(memory_encoder, encoder_inputs(2, 1.0), check_trace=False)
        traced_tracker["tracker_mask_decoder"] = torch.jit.trace(
            mask_decoder, mask_decoder_inputs(2), check_trace=False
        )
        log(f"traced tracker modules in {time.time() - t:.1f}s")
        if args.dtype != "float32":
            t = time.time()
            traced_text, traced_detector = map(freeze, (traced_text, traced_detector))
            traced_vision = {name: freeze(module) for name, module in traced_vision.items()}
            traced_points = {name: freeze(module) for name, module in traced_points.items()}
            traced_tracker = {name: freeze(module) for name, module in traced_tracker.items()}
            log(f"froze the {args.dtype} modules in {time.time() - t:.1f}s")

        # The traced graphs must reproduce eager outputs (shapes different from the trace's too).
        # fp32: the largest absolute difference; reduced precision: the mean difference relative
        # to the output's mean magnitude (see TRACE_TOLERANCE).
        def difference(eager_out: torch.Tensor, traced_out: torch.Tensor) -> float:
            error = (eager_out.float() - traced_out.float()).abs()
            if args.dtype == "float32":
                return error.max().item()
            return error.mean().item() / max(eager_out.float().abs().mean().item(), 1e-6)

        diffs: list[tuple[float, str]] = []

        def check(name: str, eager_outs, traced_outs) -> None:
            if isinstance(eager_outs, torch.Tensor):
                eager_outs, traced_outs = (eager_outs,), (traced_outs,)
            diffs.extend((difference(a, b), f"{name} output {i}") for i, (a, b) in enumerate(zip(eager_outs, traced_outs)))

        check("vision_trunk", vision_features, traced_vision["vision_trunk"](pixels))
        check("detector_neck", maps[:3], traced_vision["detector_neck"](vision_features))
        check("tracker_neck", maps[3:], traced_vision["tracker_neck"](vision_features))
        # A batch of images (cross-request batching) equals each image encoded alone: `pixels`
        # (its eager features are at hand) and one more image, so a full-size export pays one
        # more eager trunk call.
        other = torch.randn_like(pixels)
        other_features = trunk(other)
        check(
            "vision_trunk (batch of 2)",
            torch.cat([vision_features, other_features]),
            traced_vision["vision_trunk"](torch.cat([pixels, other])),
        )
        for name, neck in (("detector_neck", detector_neck), ("tracker_neck", tracker_neck)):
            alone = [torch.cat([one, two]) for one, two in zip(neck(vision_features), neck(other_features))]
            check(f"{name} (batch of 2)", alone, traced_vision[name](torch.cat([vision_features, other_features])))
        ids3 = torch.cat([ids, ids[:1]])
        mask3 = torch.cat([mask, mask[:1]])
        feats3 = text(ids3, mask3)
        check("text_encoder", feats3, traced_text(ids3, mask3))
        boxes3 = torch.rand(3, 3, 4, device=device) * 0.4 + 0.3
        labels3 = torch.tensor([[1, 0, -10], [1, -10, -10], [-10, -10, -10]], device=device)
        eager = detector(maps[0], maps[1], maps[2], feats3, mask3, boxes3, labels3)
        check("detector", eager, traced_detector(maps[0], maps[1], maps[2], feats3, mask3, boxes3, labels3))
        clicks, click_labels = points[:, :, :1].repeat(2, 1, 1, 1), point_labels[:, :, :1].repeat(2, 1, 1)
        for name, module in point_decoders.items():
            check(
                name,
                module(maps[3], maps[4], maps[5], clicks, click_labels),
                traced_points[name](maps[3], maps[4], maps[5], clicks, click_labels),
            )
        tracker_checks = [
            (memory_attention, "memory_attention", memory_inputs(*shape)) for shape in ((1,), (3,), (1, 1, 1), (3, 4, 7))
        ]
        for name, module in tracker_decoders.items():
            tracker_checks += [(module, name, decoder_inputs(objects, n)) for objects, n in ((1, 1), (3, 2), (2, 5))]
        tracker_checks += [
            (memory_encoder, "memory_encoder", encoder_inputs(objects, binarize))
            for objects, binarize in ((1, 0.0), (3, 1.0), (3, 0.0))
        ]
        tracker_checks += [
            (memory_encoder, "memory_encoder", encoder_inputs(objects, 0.0, 4 * grid)) for objects in (1, 3)
        ]
        tracker_checks += [
            (mask_decoder, "tracker_mask_decoder", mask_decoder_inputs(objects, empty))
            for objects, empty in ((1, ()), (1, (0,)), (3, (1,)))
        ]
        for module, name, inputs in tracker_checks:
            check(name, module(*inputs), traced_tracker[name](*inputs))
        if args.compile:
            t = time.time()
            compiled = compile_trunk(trunk, pixels, out / COMPILED_TRUNK, args.dtype != "float32")
            log(f"compiled the vision trunk with AOTInductor in {time.time() - t:.1f}s")
            check("vision_trunk (compiled)", vision_features, compiled(pixels))
            check(
                "vision_trunk (compiled, batch of 2)",
                torch.cat([vision_features, other_features]),
                compiled(torch.cat([pixels, other])),
            )
        worst, where = max(diffs)
        measure = "max abs" if args.dtype == "float32" else "mean relative"
        log(f"traced vs eager: {measure} difference {worst:.3g} (at most; {where})")
        if worst > TRACE_TOLERANCE[args.dtype]:
            (out / COMPILED_TRUNK).unlink(missing_ok=True)
            raise SystemExit(f"traced modules differ from eager by {worst} ({where}): refusing to write the bundle")

    modules = {**traced_vision, "text_encoder": traced_text, "detector": traced_detector}
    modules.update(traced_points)
    modules.update(traced_tracker)
    for name, module in modules.items():
        module.save(str(out / f"{name}.pt"))
    log("saved modules")
    write_vocabulary(source, Path(args.bpe) if args.bpe else None, out)

    f32 = "float32"
    det_maps = [
        spec("fpn_0", [1, width, 4 * grid, 4 * grid], f32),
        spec("fpn_1", [1, width, 2 * grid, 2 * grid], f32),
        spec("fpn_2", [1, width, grid, grid], f32),
    ]
    trk_maps = [
        spec("tracker_fpn_0", [1, tracker_width // 8, 4 * grid, 4 * grid], f32),
        spec("tracker_fpn_1", [1, tracker_width // 4, 2 * grid, 2 * grid], f32),
        spec("tracker_fpn_2", [1, int(maps[5].shape[1]), grid, grid], f32),
    ]
    for entry, tensor in zip(det_maps + trk_maps, maps):
        if list(tensor.shape) != entry["shape"]:
            raise SystemExit(f"{entry['name']} has shape {list(tensor.shape)}, expected {entry['shape']}")
    # The vision parts take a batch of images; the other modules take one image's maps.
    def batched(entry: dict) -> dict:
        return {**entry, "shape": ["B", *entry["shape"][1:]]}

    trunk_output = spec("vision_features", ["B", grid * grid, int(vision_features.shape[-1])], f32)
    if list(vision_features.shape[1:]) != trunk_output["shape"][1:]:
        raise SystemExit(f"vision_features has shape {list(vision_features.shape)}, expected {trunk_output['shape']}")
    mask_size = int(eager[3].shape[-1])
    point_inputs = [
        *trk_maps,
        spec("points", ["B", 1, "N", 2], f32),
        spec("point_labels", ["B", 1, "N"], "int64"),
    ]

    def point_outputs(masks: int) -> list[dict]:
        return [
            spec("mask_logits", ["B", 1, masks, mask_size, mask_size], f32),
            spec("iou_scores", ["B", 1, masks], f32),
            spec("object_score_logits", ["B", 1, 1], f32),
        ]

    conditioned = spec("conditioned", ["B", tracker_width, grid, grid], f32)
    current = spec("current", [1, tracker_width, grid, grid], f32)
    tracker_decoder = {
        "inputs": [
            conditioned,
            trk_maps[0],
            trk_maps[1],
            spec("points", ["B", 1, "N", 2], f32),
            spec("point_labels", ["B", 1, "N"], "int64"),
        ],
        "outputs": [
            spec("low_res_masks", ["B", 1, mask_size, mask_size], f32),
            spec("high_res_masks", ["B", 1, resolution, resolution], f32),
            spec("object_pointer", ["B", tracker_width], f32),
            spec("object_score_logits", ["B", 1], f32),
            spec("iou_scores", ["B", 1], f32),
        ],
    }
    tracker_modules = {
        "memory_attention": {
            "file": "memory_attention.pt",
            "inputs": [
                current,
                spec("memory", ["B", "NS", grid * grid, mem_dim], f32),
                spec("memory_tpos", ["B", "NS"], "int64"),
                spec("memory_valid", ["B", "NS"], f32),
                spec("pointers", ["B", "NP", tracker_width], f32),
                spec("pointer_offsets", ["B", "NP"], f32),
                spec("pointer_valid", ["B", "NP"], f32),
            ],
            "outputs": [conditioned],
            "attributes": [spec("no_memory_embedding", [1, 1, tracker_width], f32)],
        },
        "tracker_decoder": {"file": "tracker_decoder.pt", **tracker_decoder},
        "tracker_decoder_multimask": {"file": "tracker_decoder_multimask.pt", **tracker_decoder},
        "memory_encoder": {
            "file": "memory_encoder.pt",
            "inputs": [
                current,
                # R x R (the decoders' masks) or 4G x 4G (concept tracking's low-res masks).
                spec("high_res_masks", ["B", 1, "H", "W"], f32),
                spec("object_score_logits", ["B", 1], f32),
                spec("binarize", [1], f32),
            ],
            "outputs": [spec("memory", ["B", grid * grid, mem_dim], "bfloat16")],
        },
        "tracker_mask_decoder": {
            "file": "tracker_mask_decoder.pt",
            "inputs": [*trk_maps, spec("mask_inputs", ["B", 1, mask_size, mask_size], f32)],
            "outputs": [
                spec("low_res_masks", ["B", 1, mask_size, mask_size], f32),
                spec("high_res_masks", ["B", 1, resolution, resolution], f32),
                spec("object_pointer", ["B", tracker_width], f32),
                spec("object_score_logits", ["B", 1], f32),
            ],
        },
    }
    if list(memory_size) != [4 * mask_size, 4 * mask_size]:
        raise SystemExit(f"memory encoder input {memory_size} is not 4 x the mask size {mask_size}")
    concept = concept_manifest(model)
    if concept["low_res_mask_size"] != mask_size:
        raise SystemExit(f"low_res_mask_size {concept['low_res_mask_size']} is not the mask size {mask_size}")

    manifest = {
        "format": "sam3-bundle",
        "format_version": FORMAT_VERSION,
        "model": {
            "id": model_id,
            "random_weights": random_weights,
            "seed": seed,
            "checksum": checksum,
        },
        "versions": {"torch": torch.__version__, "transformers": transformers_version, "exporter": EXPORTER_VERSION},
        "device_type": device.type,
        "dtype": args.dtype,
        "resolution": resolution,
        "patch_size": patch,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "feature_size": grid,
        "mask_size": mask_size,
        "hidden_size": width,
        "tracker_hidden_size": tracker_width,
        "num_queries": queries,
        "text": {
            "context_length": context,
            "vocab_file": VOCAB_FILE,
            "vocab_size": det_cfg.text_config.vocab_size,
            "bos_id": 49406,
            "eos_id": 49407,
            "pad_id": 49407,
        },
        "modules": {
            "vision_trunk": {
                "file": "vision_trunk.pt",
                **({"compiled": COMPILED_TRUNK, "compiled_cpu_flags": host_isa_flags()} if args.compile else {}),
                "inputs": [spec("pixel_values", ["B", 3, resolution, resolution], f32)],
                "outputs": [trunk_output],
            },
            "detector_neck": {
                "file": "detector_neck.pt",
                "inputs": [trunk_output],
                "outputs": [batched(entry) for entry in det_maps],
            },
            "tracker_neck": {
                "file": "tracker_neck.pt",
                "inputs": [trunk_output],
                "outputs": [batched(entry) for entry in trk_maps],
            },
            "text_encoder": {
                "file": "text_encoder.pt",
                "inputs": [spec("input_ids", ["B", context], "int64"), spec("attention_mask", ["B", context], "int64")],
                "outputs": [spec("text_features", ["B", context, width], f32)],
            },
            "detector": {
                "file": "detector.pt",
                "inputs": [
                    *det_maps,
                    spec("text_features", ["B", context, width], f32),
                    spec("text_mask", ["B", context], "int64"),
                    spec("boxes", ["B", "NB", 4], f32),
                    spec("box_labels", ["B", "NB"], "int64"),
                ],
                "outputs": [
                    spec("pred_logits", ["B", queries], f32),
                    spec("pred_boxes", ["B", queries, 4], f32),
                    spec("presence_logits", ["B", 1], f32),
                    spec("pred_masks", ["B", queries, mask_size, mask_size], f32),
                ],
            },
            "point_decoder": {"file": "point_decoder.pt", "inputs": point_inputs, "outputs": point_outputs(1)},
            "point_decoder_multimask": {
                "file": "point_decoder_multimask.pt",
                "inputs": point_inputs,
                "outputs": point_outputs(3),
            },
            **tracker_modules,
        },
        "tracker": tracker_manifest(tracker),
        "concept": concept,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {out / 'manifest.json'} ({time.time() - started:.1f}s in all)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="hub id or local directory of a Sam3VideoModel checkpoint")
    source.add_argument("--tiny-random", action="store_true", help="build a small random-weight model")
    source.add_argument(
        "--from-bundle",
        help="a --tiny-random bundle: export its weights (its hf/ copy) again, at another --dtype or "
        "--device, as the same random model (id, seed, checksum, vocabulary)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--preset",
        default="tiny",
        help="size preset of --tiny-random: tiny, tiny-b, demo (tiny at 1008 px), full (real size)",
    )
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (trace on the serving device type)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="precision the modules compute in: bfloat16 / float16 trace them under autocast (matrix "
        "products and convolutions in that dtype, normalizations and softmax in fp32) and freeze them",
    )
    parser.add_argument("--bpe", help="CLIP vocabulary bpe_simple_vocab_16e6.txt.gz to copy into the bundle")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also compile the vision trunk ahead of time with AOTInductor (vision_trunk.pt2), which "
        "IMAGE_MODEL_COMPILE / VIDEO_MODEL_COMPILE=true run; it runs on the --device type and on CPUs "
        "with the instruction set of the exporting one",
    )
    args = parser.parse_args(argv)
    from sam3_tools.configs import FULL_PRESET, PRESETS

    if args.tiny_random and args.preset not in [*PRESETS, FULL_PRESET]:
        parser.error(f"--preset must be one of {', '.join([*PRESETS, FULL_PRESET])}")
    if args.bpe and not os.path.isfile(args.bpe):
        parser.error(f"--bpe {args.bpe}: no such file")
    export(args)


if __name__ == "__main__":
    main()
