"""The bundle's tracker modules (docs/video-internals.md section 1) against transformers' video
tracker: memory attention over fixed-capacity masked slots vs the reference's unpadded memory
attention, the tracker decoders vs `_single_frame_forward`, the memory encoder vs
`_encode_new_memory` (bit-exact in bfloat16, on the decoders' R x R masks and on concept
tracking's 4G x 4G low-res masks), the mask decoder vs `_use_mask_as_output`, and the traced
graphs of exported bundles (presets tiny and tiny-b) vs eager and vs the reference.

Tolerances: 1e-4 absolute for float32 outputs (the masked attention sums the same keys in a
different order; observed max differences are printed by the tests with -s), 1e-5 for the mask
decoder, 0 for the bfloat16 memories.
"""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1]
ATOL = 1e-4


def build_model(preset: str, seed: int):
    from transformers import Sam3VideoModel

    from export_sam3 import randomize_zero_parameters
    from sam3_tools.configs import tiny_config

    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_config(preset)).eval()
    # Every parameter non-zero (the temporal position table, no-object pointer, occlusion
    # embedding, ... are zeros in a fresh model), so that every path is exercised.
    randomize_zero_parameters(model)
    return model


def sign_varying_object_scores(model):
    """An object-score head whose sign depends on the prompt: present and absent objects both occur."""
    head = model.tracker_model.mask_decoder.pred_obj_score_head.proj_out
    with torch.no_grad():
        head.weight.mul_(60.0)
        head.bias.fill_(0.69)
    return model


@pytest.fixture(scope="module")
def model():
    model = sign_varying_object_scores(build_model("tiny-b", 11))
    tracker = model.tracker_model
    with torch.no_grad():
        # Memory attention weights of a trained model's scale (std ~ 1 / sqrt(width) instead of
        # 0.02), and temporal encodings of unit scale, so that the memories, their temporal
        # positions and the pointers visibly change its output.
        for module in tracker.memory_attention.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(4.0)
        tracker.memory_temporal_positional_encoding.mul_(50.0)
        tracker.temporal_positional_encoding_projection_layer.weight.mul_(4.0)
    return model


def geometry(model):
    from sam3_tools.tracker_modules import memory_slots, tracker_geometry

    g = tracker_geometry(model.tracker_model)
    g["slots"], g["pointer_slots"] = memory_slots(model.tracker_model)
    return g


def test_every_preset_has_a_tracker_width_the_video_tracker_accepts():
    from sam3_tools.configs import PRESETS, tiny_config

    for preset in PRESETS:
        tracker = tiny_config(preset).tracker_config
        width = tracker.vision_config.fpn_hidden_size
        assert width % 64 == 0 and width > 64, preset
        assert tracker.memory_encoder_output_channels == 64
        assert tracker.mask_decoder_config.hidden_size == width == tracker.memory_attention_hidden_size


def test_position_constants_equal_what_the_reference_computes(model):
    from sam3_tools.tracker_modules import image_position_encoding

    g = geometry(model)
    vit_width = model.config.detector_config.vision_config.backbone_config.hidden_size
    embeds = SimpleNamespace(last_hidden_state=torch.randn(1, g["grid"] ** 2, vit_width))
    _, positions = model.get_vision_features_for_tracker(embeds)
    expected = positions[-1].permute(1, 2, 0).reshape(1, g["hidden"], g["grid"], g["grid"])
    assert torch.equal(image_position_encoding(model), expected)


def new_session():
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    session = Sam3TrackerVideoInferenceSession(dtype=torch.float32)
    session.obj_id_to_idx(1)
    return session


# (frames T, current frame f, reverse, conditioning frames in insertion order, tracked frames)
MEMORY_CASES = [
    (20, 16, False, [0], range(1, 16)),  # 1 conditioning + 6 previous frames, 16 pointers
    (20, 12, False, [0, 5, 19, 10, 15], [1, 2, 3, 4, 6, 7, 8, 9, 11]),  # > 4 cond frames: selection
    (12, 6, True, [11, 3], [7, 8, 10]),  # reverse, a missing neighbour
    (5, 1, False, [0], []),  # one memory, one pointer
    (8, 7, True, [0], []),  # reverse at the end: no pointer at all
    (30, 18, False, [13, 14, 15, 16, 17], [12]),  # an unselected cond frame fills the window
]


@torch.no_grad()
def test_masked_memory_attention_equals_the_reference_unpadded_attention(model):
    """Slots in random order, garbage in the invalid ones (memory, tpos, pointers, offsets),
    one batch row per case; each row equals `_prepare_memory_conditioned_features`, which
    concatenates the valid memories and pointers and calls the reference memory attention."""
    from sam3_tools.tracker_modules import MemoryAttention, image_position_encoding, memory_position_encoding

    tracker = model.tracker_model
    g = geometry(model)
    grid, hidden, mem_dim, slots, pointer_slots = g["grid"], g["hidden"], g["mem_dim"], g["slots"], g["pointer_slots"]
    tokens = grid * grid
    generator = torch.Generator().manual_seed(5)
    current = torch.randn(1, hidden, grid, grid, generator=generator)
    flat = current.flatten(2).permute(2, 0, 1)  # (G*G, 1, C), the reference's layout
    position = image_position_encoding(model).flatten(2).permute(2, 0, 1)
    memory_position = memory_position_encoding(tracker).flatten(2).permute(2, 0, 1)

    batch = len(MEMORY_CASES)
    memory = torch.randn(batch, slots, tokens, mem_dim, generator=generator) * 50  # garbage by default
    memory_tpos = torch.randint(0, g["num_maskmem"], (batch, slots), generator=generator)
    memory_valid = torch.zeros(batch, slots)
    pointers = torch.randn(batch, pointer_slots, hidden, generator=generator) * 50
    pointer_offsets = torch.rand(batch, pointer_slots, generator=generator) * 3
    pointer_valid = torch.zeros(batch, pointer_slots)
    expected = []
    counts = []
    for row, (frames, frame, reverse, cond, tracked) in enumerate(MEMORY_CASES):
        session = new_session()
        store = session.output_dict_per_obj[0]
        for t in list(cond) + list(tracked):
            key = "cond_frame_outputs" if t in cond else "non_cond_frame_outputs"
            store[key][t] = {
                "maskmem_features": torch.randn(tokens, 1, mem_dim, generator=generator).to(torch.bfloat16),
                "maskmem_pos_enc": memory_position,
                "object_pointer": torch.randn(1, 1, hidden, generator=generator),
            }
        expected.append(
            tracker._prepare_memory_conditioned_features(
                inference_session=session, frame_idx=frame, obj_idx=0, is_initial_conditioning_frame=False,
                current_vision_features=flat, current_vision_positional_embeddings=position,
                num_total_frames=frames, track_in_reverse_time=reverse,
            )
        )
        # The slots the C++ side fills: the reference's memory frames (offset k: tpos k - 1, a
        # conditioning frame k = 0: the last row), its pointers with offset / (P - 1).
        spatial = [(k, out) for k, out in tracker._gather_memory_frame_outputs(session, 0, frame, reverse) if out]
        offsets, tokens_list, max_pointers = tracker._get_object_pointers(
            session, 0, frame, frames, flat.device, reverse, False
        )
        counts.append((len(spatial), len(tokens_list)))
        for slot, (k, out) in zip(torch.randperm(slots, generator=generator).tolist(), spatial):
            memory[row, slot] = out["maskmem_features"][:, 0].float()
            memory_tpos[row, slot] = (k - 1) % g["num_maskmem"]
            memory_valid[row, slot] = 1
        for slot, offset, pointer in zip(
            torch.randperm(pointer_slots, generator=generator).tolist(), offsets, tokens_list
        ):
            pointers[row, slot] = pointer.reshape(hidden)
            pointer_offsets[row, slot] = torch.tensor(offset, dtype=torch.float32) / float(max_pointers - 1)
            pointer_valid[row, slot] = 1
    assert counts == [(7, 16), (9, 12), (5, 4), (1, 1), (1, 0), (6, 6)]

    got = MemoryAttention(model).eval()(
        current, memory, memory_tpos, memory_valid, pointers, pointer_offsets, pointer_valid
    )
    worst = max((got[row : row + 1] - want).abs().max().item() for row, want in enumerate(expected))
    print(f"masked memory attention vs reference: max |diff| {worst:.3g}")
    assert worst <= ATOL
    # Not vacuous: the memories change the result, far beyond the tolerance.
    spread = min((got[row] - got[row + 1]).abs().max().item() for row in range(batch - 1))
    print(f"memory attention: smallest max |diff| between cases {spread:.3g}")
    assert spread > 100 * ATOL


def reference_init_features(model, generator):
    """Random tracker maps and the reference's memory-free conditioning of the coarsest one."""
    g = geometry(model)
    grid, hidden = g["grid"], g["hidden"]
    fpn_0 = torch.randn(1, hidden // 8, 4 * grid, 4 * grid, generator=generator)
    fpn_1 = torch.randn(1, hidden // 4, 2 * grid, 2 * grid, generator=generator)
    fpn_2 = torch.randn(1, hidden, grid, grid, generator=generator)
    pixel = model.tracker_model._prepare_memory_conditioned_features(
        inference_session=None, frame_idx=0, obj_idx=0, is_initial_conditioning_frame=True,
        current_vision_features=fpn_2.flatten(2).permute(2, 0, 1), current_vision_positional_embeddings=None,
        num_total_frames=1,
    )
    return fpn_0, fpn_1, fpn_2, pixel


@torch.no_grad()
def test_tracker_decoders_equal_the_reference_single_frame_forward(model):
    """Three objects in one call (each its own prompt of N points) against one reference
    `_single_frame_forward` per object, for both decoders and N = 1, 2, 3 (a box is the two
    corner points 2, 3; tracking frames pass the dummy point labelled -1)."""
    from sam3_tools.tracker_modules import MemoryAttention, TrackerDecoder

    tracker = model.tracker_model
    g = geometry(model)
    resolution = g["resolution"]
    generator = torch.Generator().manual_seed(6)
    fpn_0, fpn_1, fpn_2, pixel = reference_init_features(model, generator)
    # The C++ side conditions initial frames itself with the memory_attention attribute.
    no_memory = MemoryAttention(model).no_memory_embedding
    assert torch.equal(fpn_2 + no_memory.reshape(1, -1, 1, 1), pixel)

    prompts = {
        1: [[[1]], [[1]], [[-1]]],
        2: [[[1, 0]], [[2, 3]], [[1, 1]]],
        3: [[[2, 3, 1]], [[1, 0, 0]], [[2, 3, 0]]],
    }
    presence = set()
    worst = 0.0
    for multimask in (True, False):
        decoder = TrackerDecoder(model, multimask_output=multimask).eval()
        for count, labels in prompts.items():
            labels = torch.tensor(labels)
            points = torch.rand(3, 1, count, 2, generator=generator) * resolution
            points[labels == -1] = 0.0
            conditioned = pixel.expand(3, -1, -1, -1) + 0.3 * torch.randn(3, *pixel.shape[1:], generator=generator)
            got = decoder(conditioned, fpn_0, fpn_1, points, labels)
            for row in range(3):
                ref = tracker._single_frame_forward(
                    input_points=points[row : row + 1],
                    input_labels=labels[row : row + 1].to(torch.int32),
                    image_embeddings=[fpn_0, fpn_1, conditioned[row : row + 1]],
                    multimask_output=multimask,
                )
                chosen = ref.iou_scores[0, 0].max() if multimask else ref.iou_scores[0, 0, 0]
                want = [
                    ref.pred_masks, ref.high_res_masks, ref.object_pointer.reshape(1, -1),
                    ref.object_score_logits.reshape(1, 1), chosen.reshape(1, 1),
                ]
                for got_tensor, want_tensor in zip(got, want):
                    assert got_tensor[row : row + 1].shape == want_tensor.shape
                    worst = max(worst, (got_tensor[row : row + 1] - want_tensor).abs().max().item())
                presence.add(bool(ref.object_score_logits.item() > 0))
                if ref.object_score_logits.item() <= 0:
                    assert torch.all(got[0][row] == -1024.0)
                    assert torch.equal(got[2][row], tracker.no_object_pointer[0])
    print(f"tracker decoders vs reference: max |diff| {worst:.3g}")
    assert worst <= ATOL
    assert presence == {True, False}


@pytest.mark.parametrize("side", ["R", "4G"])
@torch.no_grad()
def test_memory_encoder_equals_the_reference_bit_exactly(model, side):
    """On the decoders' R x R masks, and on the 4G x 4G low-res masks concept tracking encodes
    (Sam3VideoModel._tracker_update_memories; resized inside to 16G x 16G, bilinear,
    antialiased, as the reference does)."""
    from sam3_tools.tracker_modules import MemoryEncoder, memory_position_encoding

    tracker = model.tracker_model
    g = geometry(model)
    size = g["resolution"] if side == "R" else 4 * g["grid"]
    generator = torch.Generator().manual_seed(7)
    current = torch.randn(1, g["hidden"], g["grid"], g["grid"], generator=generator)
    masks = torch.randn(3, 1, size, size, generator=generator) * 6
    masks[2] = -1024.0  # an absent object, as the decoder fills it
    scores = torch.tensor([[3.5], [0.0], [-2.0]])  # present, on the boundary (absent), absent
    encoder = MemoryEncoder(model).eval()
    outputs = []
    for binarize in (1.0, 0.0):
        got = encoder(current, masks, scores, torch.tensor([binarize]))
        want, position = tracker._encode_new_memory(
            current_vision_feats=current.flatten(2).permute(2, 0, 1).expand(-1, 3, -1),
            pred_masks_high_res=masks,
            object_score_logits=scores[:, :, None],
            is_mask_from_pts=binarize > 0,
        )
        assert got.dtype == torch.bfloat16 and want.dtype == torch.bfloat16
        assert torch.equal(got, want.permute(1, 0, 2))
        assert torch.equal(position[:, :1], memory_position_encoding(tracker).flatten(2).permute(2, 0, 1))
        outputs.append(got)
    assert not torch.equal(outputs[0], outputs[1])


def detection_masks(objects: int, side: int, generator, empty=()) -> torch.Tensor:
    """Binary masks [B, 1, side, side] float32 (0 / 1, as concept tracking stores a detection's
    logits >= 0.5): a disc and a random speckle each; the `empty` rows all zero."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    masks = torch.zeros(objects, 1, side, side)
    for row in range(objects):
        cy, cx = (torch.rand(2, generator=generator) * side).tolist()
        radius = 2 + torch.rand(1, generator=generator).item() * side / 3
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        speckle = torch.rand(side, side, generator=generator) > 0.97
        masks[row, 0] = (disc | speckle).float()
    masks[list(empty)] = 0.0
    return masks


def reference_mask_outputs(tracker, fpn_0, fpn_1, fpn_2, masks):
    """`_use_mask_as_output` per object (the reference adds each new object's mask alone, batch
    1): [low_res_masks, high_res_masks, object_pointer, object_score_logits] batched, and the
    decoder's own object score logits per object (hooked)."""
    scores = []
    hook = tracker.mask_decoder.register_forward_hook(lambda module, args, output: scores.append(output[3].item()))
    rows = []
    try:
        for row in range(masks.shape[0]):
            ref = tracker._use_mask_as_output(fpn_2, [fpn_0, fpn_1], masks[row : row + 1])
            assert torch.all(ref.iou_scores == 1.0)
            rows.append([
                ref.pred_masks, ref.high_res_masks, ref.object_pointer.reshape(1, -1),
                ref.object_score_logits.reshape(1, 1),
            ])
    finally:
        hook.remove()
    return [torch.cat(column) for column in zip(*rows)], scores


@pytest.mark.parametrize("decoder_present", [True, False], ids=["decoder-present", "decoder-absent"])
@pytest.mark.parametrize("preset", ["tiny", "tiny-b"])
@torch.no_grad()
def test_tracker_mask_decoder_equals_the_reference_use_mask_as_output(preset, decoder_present):
    """A detection's mask as the tracker's output, B = 1 and 3 objects in one call against one
    reference call per object, masks with and without foreground: an empty mask gives the score
    -10 and the no-object pointer; a mask with foreground the score +10 and the pointer of the
    decoder pass on it, unless that pass calls the object absent (then the no-object pointer,
    the score still +10). The random decoder's own object score hardly depends on its inputs, so
    its sign is set through the score head's bias (+-2)."""
    from sam3_tools.tracker_modules import TrackerMaskDecoder

    model = build_model(preset, 12)
    tracker = model.tracker_model
    with torch.no_grad():
        tracker.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0 if decoder_present else -2.0)
    g = geometry(model)
    grid, hidden = g["grid"], g["hidden"]
    generator = torch.Generator().manual_seed(13)
    decoder = TrackerMaskDecoder(model).eval()
    worst = 0.0
    for objects, empty in ((1, ()), (1, (0,)), (3, (1,)), (3, ())):
        fpn_0 = torch.randn(1, hidden // 8, 4 * grid, 4 * grid, generator=generator)
        fpn_1 = torch.randn(1, hidden // 4, 2 * grid, 2 * grid, generator=generator)
        fpn_2 = torch.randn(1, hidden, grid, grid, generator=generator)
        masks = detection_masks(objects, 4 * grid, generator, empty)
        got = decoder(fpn_0, fpn_1, fpn_2, masks)
        want, decoder_scores = reference_mask_outputs(tracker, fpn_0, fpn_1, fpn_2, masks)
        assert len(got) == len(want) == 4
        for got_tensor, want_tensor in zip(got, want):
            assert got_tensor.shape == want_tensor.shape and got_tensor.dtype == want_tensor.dtype
            worst = max(worst, (got_tensor - want_tensor).abs().max().item())
        for row in range(objects):
            foreground = bool(masks[row].any())
            assert (decoder_scores[row] > 0) == decoder_present
            assert got[3][row].item() == (10.0 if foreground else -10.0)
            absent = not foreground or not decoder_present
            assert torch.equal(got[2][row], tracker.no_object_pointer[0]) == absent
        # The masks are the input's: +10 inside, -10 outside (at R x R, before resizing back).
        assert torch.equal(got[1] > 0, torch.nn.functional.interpolate(
            masks, size=got[1].shape[-2:], mode="bilinear", align_corners=False, antialias=True) > 0.5)
    print(f"tracker mask decoder ({preset}, decoder present {decoder_present}) vs reference: max |diff| {worst:.3g}")
    assert worst <= 1e-5


@pytest.fixture(scope="module", params=[("tiny", 5), ("tiny-b", 6)], ids=["tiny", "tiny-b"])
def bundle(request, tmp_path_factory):
    preset, seed = request.param
    out = tmp_path_factory.mktemp(preset)
    subprocess.run(
        [sys.executable, str(TOOLS / "export_sam3.py"), "--tiny-random", "--seed", str(seed), "--preset", preset,
         "--out", str(out)],
        check=True, capture_output=True,
    )
    return out


@torch.no_grad()
def test_exported_tracker_modules_equal_eager(bundle):
    """The traced graphs (traced with two objects and three points) with other batch sizes and
    point counts, against the eager wrappers built from the bundle's own hf/ checkpoint."""
    from transformers import Sam3VideoModel

    from sam3_tools.tracker_modules import (
        CONCEPT_FIELDS,
        MemoryAttention,
        MemoryEncoder,
        TrackerDecoder,
        TrackerMaskDecoder,
    )

    manifest = json.loads((bundle / "manifest.json").read_text())
    model = Sam3VideoModel.from_pretrained(bundle / "hf").eval()
    g = geometry(model)
    assert manifest["format_version"] == 4
    assert manifest["tracker"] == {
        "mem_dim": 64, "num_maskmem": 7, "max_cond_frames_in_attn": 4, "max_object_pointers": 16,
        "memory_slots": 10, "pointer_slots": 32,
        "multimask_output_in_sam": True, "multimask_min_pt_num": 0, "multimask_max_pt_num": 1,
        "multimask_output_for_tracking": True, "sigmoid_scale_for_mem_enc": 20.0, "sigmoid_bias_for_mem_enc": -10.0,
    }
    # Every threshold of the checkpoint's Sam3VideoConfig, by its own name (the transformers defaults;
    # low_res_mask_size the presets' 4G).
    assert list(manifest["concept"]) == list(CONCEPT_FIELDS)
    assert manifest["concept"] == {name: getattr(model.config, name) for name in CONCEPT_FIELDS}
    assert manifest["concept"]["new_det_thresh"] == 0.7 and manifest["concept"]["min_trk_keep_alive"] == -1
    assert manifest["concept"]["low_res_mask_size"] == manifest["mask_size"] == 4 * g["grid"]
    assert manifest["modules"]["memory_encoder"]["inputs"][1]["shape"] == ["B", 1, "H", "W"]
    modules = {name: torch.jit.load(str(bundle / manifest["modules"][name]["file"])) for name in (
        "memory_attention", "tracker_decoder", "tracker_decoder_multimask", "memory_encoder",
        "tracker_mask_decoder")}
    # The random bundle's object-score bias (docs/bundle-format.md).
    assert model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.item() == 2.0
    assert torch.equal(modules["memory_attention"].no_memory_embedding, model.tracker_model.no_memory_embedding)

    grid, hidden, mem_dim, resolution = g["grid"], g["hidden"], g["mem_dim"], g["resolution"]
    generator = torch.Generator().manual_seed(8)
    current = torch.randn(1, hidden, grid, grid, generator=generator)
    fpn_0 = torch.randn(1, hidden // 8, 4 * grid, 4 * grid, generator=generator)
    fpn_1 = torch.randn(1, hidden // 4, 2 * grid, 2 * grid, generator=generator)

    def check(name, eager, inputs):
        traced = modules[name](*inputs)
        want = eager(*inputs)
        traced, want = (traced, want) if isinstance(want, tuple) else ((traced,), (want,))
        specs = manifest["modules"][name]["outputs"]
        assert len(traced) == len(specs)
        for got, expected, spec in zip(traced, want, specs):
            assert got.dtype == expected.dtype and str(got.dtype) == f"torch.{spec['dtype']}"
            assert [d for d, s in zip(got.shape, spec["shape"]) if not isinstance(s, str)] == [
                s for s in spec["shape"] if not isinstance(s, str)
            ]
            torch.testing.assert_close(got.float(), expected.float(), atol=1e-5, rtol=0)

    for objects in (1, 3):
        valid = (torch.rand(objects, g["slots"], generator=generator) > 0.5).float()
        valid[:, 0] = 1
        check("memory_attention", MemoryAttention(model).eval(), (
            current,
            torch.randn(objects, g["slots"], grid * grid, mem_dim, generator=generator),
            torch.randint(0, 7, (objects, g["slots"]), generator=generator),
            valid,
            torch.randn(objects, g["pointer_slots"], hidden, generator=generator),
            torch.rand(objects, g["pointer_slots"], generator=generator),
            (torch.rand(objects, g["pointer_slots"], generator=generator) > 0.5).float(),
        ))
    for multimask, name in ((False, "tracker_decoder"), (True, "tracker_decoder_multimask")):
        for objects, count in ((1, 1), (3, 2), (1, 6)):
            labels = torch.randint(0, 4, (objects, 1, count), generator=generator)
            points = torch.rand(objects, 1, count, 2, generator=generator) * resolution
            conditioned = torch.randn(objects, hidden, grid, grid, generator=generator)
            check(name, TrackerDecoder(model, multimask).eval(), (conditioned, fpn_0, fpn_1, points, labels))
    # R x R masks (the decoders'), then 4G x 4G (concept tracking's low-res masks).
    for objects, binarize, side in ((1, 0.0, resolution), (3, 1.0, resolution), (4, 0.0, resolution),
                                    (1, 0.0, 4 * grid), (3, 0.0, 4 * grid), (2, 1.0, 4 * grid)):
        masks = torch.randn(objects, 1, side, side, generator=generator) * 5
        scores = torch.randn(objects, 1, generator=generator)
        check("memory_encoder", MemoryEncoder(model).eval(), (current, masks, scores, torch.tensor([binarize])))
    # The mask decoder: eager wrapper and transformers' _use_mask_as_output (one call per object).
    for objects, empty in ((1, ()), (1, (0,)), (3, (1,))):
        masks = detection_masks(objects, 4 * grid, generator, empty)
        inputs = (fpn_0, fpn_1, current, masks)
        check("tracker_mask_decoder", TrackerMaskDecoder(model).eval(), inputs)
        want, _ = reference_mask_outputs(model.tracker_model, *inputs)
        for got, expected in zip(modules["tracker_mask_decoder"](*inputs), want):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


class ModuleTracker:
    """One object tracked with the bundle's modules only, with the bookkeeping of
    docs/video-internals.md (the reference's, as ../shared/TRACKER.md maps it): what the C++
    tracker does, in Python, to show that the module contracts suffice for parity."""

    def __init__(self, modules: dict, config: dict, pixels: torch.Tensor):
        self.modules = modules
        self.config = config
        self.pixels = pixels
        self.frames = pixels.shape[0]
        self.cond: dict[int, dict] = {}  # insertion order matters (ties in the selection)
        self.non_cond: dict[int, dict] = {}
        self.tracked: set[int] = set()
        self.conditioned: list[torch.Tensor] = []  # memory_attention outputs, in call order

    def slots(self, frame: int, reverse: bool):
        cfg = self.config
        if len(self.cond) <= cfg["max_cond_frames_in_attn"]:
            selected = list(self.cond)
        else:
            before = [t for t in self.cond if t < frame]
            after = [t for t in self.cond if t >= frame]
            selected = ([max(before)] if before else []) + ([min(after)] if after else [])
            rest = sorted((t for t in self.cond if t not in selected), key=lambda t: abs(t - frame))
            selected += rest[: cfg["max_cond_frames_in_attn"] - len(selected)]
        memories = [(self.cond[t], cfg["num_maskmem"] - 1) for t in selected]
        for k in range(cfg["num_maskmem"] - 1, 0, -1):
            t = frame + k if reverse else frame - k
            out = self.non_cond.get(t) or (self.cond.get(t) if t not in selected else None)
            if out is not None:
                memories.append((out, k - 1))
        limit = min(self.frames, cfg["max_object_pointers"])
        pointers = [(out, abs(frame - t)) for t, out in self.cond.items() if (t >= frame if reverse else t <= frame)]
        for k in range(1, limit):
            t = frame + k if reverse else frame - k
            if t < 0 or t >= self.frames:
                break
            if t in self.non_cond:
                pointers.append((self.non_cond[t], k))
        memory = torch.zeros(1, cfg["memory_slots"], *memories[0][0]["memory"].shape)
        tpos = torch.zeros(1, cfg["memory_slots"], dtype=torch.long)
        valid = torch.zeros(1, cfg["memory_slots"])
        for slot, (out, row) in enumerate(memories):
            memory[0, slot], tpos[0, slot], valid[0, slot] = out["memory"].float(), row, 1
        pointer = torch.zeros(1, cfg["pointer_slots"], memories[0][0]["pointer"].shape[-1])
        offsets = torch.zeros(1, cfg["pointer_slots"])
        pointer_valid = torch.zeros(1, cfg["pointer_slots"])
        for slot, (out, offset) in enumerate(pointers):
            pointer[0, slot], pointer_valid[0, slot] = out["pointer"], 1
            offsets[0, slot] = torch.tensor(float(offset)) / float(limit - 1)
        return memory, tpos, valid, pointer, offsets, pointer_valid

    def step(self, frame: int, points=None, labels=None, reverse: bool = False):
        """forward(frame) of the reference for one object; returns (low-res logits, score)."""
        if points is None and frame in self.cond:
            return self.cond[frame]["low_res"], self.cond[frame]["score"]
        init = points is not None and frame not in self.tracked
        fpn_0, fpn_1, fpn_2 = self.modules["vision_encoder"](self.pixels[frame : frame + 1])[3:]
        if init:
            conditioned = fpn_2 + self.modules["memory_attention"].no_memory_embedding.reshape(1, -1, 1, 1)
        else:
            conditioned = self.modules["memory_attention"](fpn_2, *self.slots(frame, reverse))
            self.conditioned.append(conditioned)
        count = 0 if points is None else len(points)
        if points is None:
            points, labels = [[0.0, 0.0]], [-1]
        cfg = self.config
        multimask = (cfg["multimask_output_in_sam"] and (init or cfg["multimask_output_for_tracking"])
                     and cfg["multimask_min_pt_num"] <= count <= cfg["multimask_max_pt_num"])
        decoder = self.modules["tracker_decoder_multimask" if multimask else "tracker_decoder"]
        low, high, pointer, score, _ = decoder(conditioned, fpn_0, fpn_1, torch.tensor([[points]]),
                                               torch.tensor([[labels]]))
        memory = self.modules["memory_encoder"](fpn_2, high, score, torch.tensor([1.0 if count else 0.0]))
        out = {"low_res": low, "score": score, "pointer": pointer[0], "memory": memory[0]}
        if init:
            self.cond[frame] = out
        else:
            self.non_cond[frame] = out
            self.tracked.add(frame)
        return low, score


@torch.no_grad()
def test_the_modules_with_the_documented_bookkeeping_track_as_the_reference(model, tmp_path):
    """A click on frame 0, forward, a two-click correction on a tracked frame, forward again,
    then backward: every frame's low-res logits and object score equal the reference's
    (Sam3TrackerVideoModel loaded from the same weights)."""
    from transformers import Sam3TrackerVideoModel
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    from sam3_tools.modules import VisionEncoder
    from sam3_tools.tracker_modules import MemoryAttention, MemoryEncoder, TrackerDecoder, tracker_manifest

    model.save_pretrained(tmp_path / "hf")
    reference = Sam3TrackerVideoModel.from_pretrained(tmp_path / "hf").eval()
    conditioned = []  # the reference's memory attention outputs [1, 1, G*G, C], in call order
    reference.memory_attention.register_forward_hook(lambda module, args, output: conditioned.append(output))
    modules = {
        "vision_encoder": VisionEncoder(model).eval(),
        "memory_attention": MemoryAttention(model).eval(),
        "tracker_decoder": TrackerDecoder(model, False).eval(),
        "tracker_decoder_multimask": TrackerDecoder(model, True).eval(),
        "memory_encoder": MemoryEncoder(model).eval(),
    }
    resolution = reference.config.image_size
    frames = 9
    generator = torch.Generator().manual_seed(9)
    base = torch.rand(1, 3, resolution, resolution, generator=generator) * 2 - 1
    pixels = torch.cat([torch.roll(base, shifts=(3 * t, 5 * t), dims=(2, 3)) for t in range(frames)])
    session = Sam3TrackerVideoInferenceSession(video=pixels, video_height=100, video_width=100, dtype=torch.float32)
    ours = ModuleTracker(modules, tracker_manifest(model.tracker_model), pixels)

    def prompt(frame, points, labels):
        session.add_point_inputs(session.obj_id_to_idx(1), frame, {
            "point_coords": torch.tensor([[points]]), "point_labels": torch.tensor([[labels]], dtype=torch.int32)})
        session.obj_with_new_inputs = [1]
        return reference(session, frame_idx=frame), ours.step(frame, points, labels)

    steps = [("prompt", 0, [[60.0, 90.0]], [1])] + [("track", f, False) for f in range(1, frames)]
    steps += [("prompt", 4, [[30.0, 40.0], [150.0, 120.0]], [1, 0])] + [("track", f, False) for f in range(5, frames)]
    steps += [("track", f, True) for f in range(3, -1, -1)]
    worst, presence = 0.0, []
    for step in steps:
        if step[0] == "prompt":
            want, (low, score) = prompt(*step[1:])
        else:
            want = reference(session, frame_idx=step[1], reverse=step[2])
            low, score = ours.step(step[1], reverse=step[2])
        worst = max(worst, (low - want.pred_masks).abs().max().item(),
                    (score.reshape(-1) - want.object_score_logits.reshape(-1)).abs().max().item())
        presence.append(bool(score.item() > 0))
    # The memory-conditioned features themselves (where the bookkeeping acts most directly).
    assert len(conditioned) == len(ours.conditioned) == 16
    for want, got in zip(conditioned, ours.conditioned):
        worst_features = (got - want[0].transpose(1, 2).reshape(got.shape)).abs().max().item()
        worst = max(worst, worst_features)
    print(f"module chain vs reference over {len(steps)} frames: max |diff| {worst:.3g}, presence {presence}")
    assert worst <= ATOL
    assert len(presence) == 18
