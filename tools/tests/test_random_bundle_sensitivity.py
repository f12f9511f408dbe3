"""The random test bundles (export_sam3.py --tiny-random) are sensitive to the tracker's memory
bookkeeping: with the weights of a --tiny-random export (export_sam3.build_random_model, the
bundle's hf/ copy), transformers' video tracker as tools/video_reference.py drives it, on the
moving-shapes video of the HTTP parity tests (96 x 72, 10 frames), changes some tracked mask by
more than the parity tests' criterion (mask IoU >= 0.99) when any one bookkeeping rule is
wrong, and not when only float noise is added.

Each wrong rule is installed by wrapping the reference method that implements it (memory frame
gathering, temporal rows, object pointers and their offsets, conditioning-frame selection, the
binarize flag and its batch quirk, the reverse direction); masks are compared as the parity
tests compare them (binarized at the video's size, IoU of every output mask in output order).
Measured minimum IoUs are printed with -s. Presets tiny (seed 0) and tiny-b (seed 1), as the
parity tests use them.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3_tools.mask_postprocess import pair_iou

FRAMES, WIDTH, HEIGHT = 10, 96, 72
MIN_IOU = 0.99  # the parity tests' criterion
PRESETS = [("tiny", 0), ("tiny-b", 1)]

# pycocotools' decode under numpy 2 (harmless, and many calls here).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def js_round(value: float) -> int:
    return math.floor(value + 0.5)


def moving_shapes(width: int = WIDTH, height: int = HEIGHT, count: int = FRAMES) -> list[np.ndarray]:
    """test/helpers/videos.ts movingShapesFrames: a red disc going right, a blue rectangle going
    down, a green square going diagonally, over a still gradient background."""
    radius = max(2, js_round(min(width, height) / 8))
    rect_w, rect_h = max(2, js_round(width / 6)), max(2, js_round(height / 5))
    side = max(2, js_round(min(width, height) / 7))

    def travel(span: float, i: int) -> int:
        return 0 if count <= 1 else js_round(span * i / (count - 1))

    yy, xx = np.mgrid[:height, :width]
    frames = []
    for i in range(count):
        disc_x, disc_y = radius + travel(width / 2 - 2 * radius, i), js_round(height / 3)
        rect_x, rect_y = js_round(2 * width / 3), travel(height / 2 - rect_h, i)
        square_x = js_round(width / 8) + travel(width / 3, i)
        square_y = js_round(height / 2 + travel(height / 2 - side - 1, i) / 2)
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[..., 0] = 90 + (40 * xx) // width
        rgb[..., 1] = 90 + (40 * yy) // height
        rgb[..., 2] = 100
        disc = (xx - disc_x) ** 2 + (yy - disc_y) ** 2 <= radius**2
        rect = (xx >= rect_x) & (xx < rect_x + rect_w) & (yy >= rect_y) & (yy < rect_y + rect_h) & ~disc
        square = (xx >= square_x) & (xx < square_x + side) & (yy >= square_y) & (yy < square_y + side)
        square &= ~disc & ~rect
        rgb[disc], rgb[rect], rgb[square] = (220, 30, 30), (30, 40, 220), (30, 200, 60)
        frames.append(rgb)
    return frames


def disc_centre(i: int) -> list[float]:
    """Normalized centre of the disc on frame i of moving_shapes()."""
    radius = max(2, js_round(min(WIDTH, HEIGHT) / 8))
    x = radius + js_round((WIDTH / 2 - 2 * radius) * i / (FRAMES - 1))
    return [x / WIDTH, js_round(HEIGHT / 3) / HEIGHT]


def click(frame: int, obj_id: int, point: list[float]) -> dict:
    return {"op": "prompt", "frame": frame, "obj_id": obj_id, "points": [point], "point_labels": [1], "box": None}


def propagate(direction: str, start: int | None = None) -> dict:
    return {"op": "propagate", "direction": direction, "start": start, "max_frames": None}


SCENARIOS = {
    # A click on the disc on frame 0, then forward over the video.
    "click": [click(0, 1, disc_centre(0)), propagate("forward")],
    # Then a second object (the rectangle) clicked on frame 3: the first one is recomputed there
    # and its memory binarized because of the other's click (the batch quirk); then forward
    # from frame 4, which attends to that memory.
    "two objects": [
        click(0, 1, disc_centre(0)), propagate("forward"), click(3, 2, [0.75, 0.2]), propagate("forward", 4),
    ],
    # Clicks on frames 0..4: more conditioning frames than max_cond_frame_num (4); then forward.
    "five prompted frames": [click(f, 1, disc_centre(f)) for f in range(5)] + [propagate("forward")],
    # A click on the last frame, then backward.
    "backward": [click(FRAMES - 1, 1, disc_centre(FRAMES - 1)), propagate("backward")],
}


class Tracker:
    """tools/video_reference.py's VideoReference on in-memory frames. The vision features of a
    frame are computed once (they do not depend on the tracking state; the reference's own cache
    holds one frame), so that many runs stay fast."""

    def __init__(self, hf_dir: Path, frames: list[np.ndarray]):
        from video_reference import VideoReference

        self.reference = VideoReference(str(hf_dir), "cpu")
        self.model = self.reference.model
        self.frames = frames
        features: dict[int, tuple] = {}
        prepare = self.model._prepare_vision_features

        def cached(inference_session, frame_idx, batch_size):
            if batch_size != 1:
                return prepare(inference_session, frame_idx, batch_size)
            if frame_idx not in features:
                features[frame_idx] = prepare(inference_session, frame_idx, 1)
            return features[frame_idx]

        self.model._prepare_vision_features = cached

    def run(self, ops: list[dict]) -> list[tuple[str, np.ndarray]]:
        """(where, [H, W] bool mask) of every object on every frame the ops output, in order."""
        from pycocotools import mask as mask_utils

        self.reference.open(self.frames)
        self.reference.iou.clear()
        outputs = []
        with torch.inference_mode():
            for index, op in enumerate(ops):
                result = self.reference.run(op)
                assert "error" not in result, result
                for frame in result.get("frames", [result] if "objects" in result else []):
                    for obj in frame["objects"]:
                        rle = {"size": obj["mask"]["size"], "counts": obj["mask"]["counts"].encode("ascii")}
                        where = f"op {index} frame {frame['frame']} object {obj['id']}"
                        outputs.append((where, mask_utils.decode(rle).astype(bool)))
        return outputs


def worst_iou(expected, got) -> tuple[float, str]:
    assert [where for where, _ in got] == [where for where, _ in expected]
    return min((pair_iou(a, b), where) for (where, a), (_, b) in zip(expected, got))


# Wrong rules. Each returns (name of the reference method, wrapper of the original method).


def shift_memory_offsets(shift):
    def wrap(gather):
        return lambda *args, **kwargs: [(shift(k), out) for k, out in gather(*args, **kwargs)]

    return "_gather_memory_frame_outputs", wrap


def temporal_row_off_by_one(model):
    """The memory of the frame k steps away at temporal row k instead of k - 1."""
    return shift_memory_offsets(lambda k: k + 1 if k > 0 else k)


def conditioning_row_zero(model):
    """A conditioning frame's memory at temporal row 0 instead of num_maskmem - 1."""
    return shift_memory_offsets(lambda k: 1 if k == 0 else k)


def drop_farthest_memory(model):
    """The previous frame num_maskmem - 1 steps away left out (a window one frame short)."""
    farthest = model.num_maskmem - 1

    def wrap(gather):
        return lambda *args, **kwargs: [(k, out) for k, out in gather(*args, **kwargs) if k != farthest]

    return "_gather_memory_frame_outputs", wrap


def edit_pointers(edit):
    def wrap(get):
        return lambda *args, **kwargs: edit(*get(*args, **kwargs))

    return "_get_object_pointers", wrap


def no_object_pointers(model):
    return edit_pointers(lambda offsets, pointers, limit: ([], [], limit))


def pointer_offset_off_by_one(model):
    return edit_pointers(lambda offsets, pointers, limit: ([o + 1 for o in offsets], pointers, limit))


def pointer_offsets_over_uncapped_limit(model):
    """Offsets divided by max_object_pointers - 1 instead of min(frames, max_object_pointers) - 1."""
    cap = model.config.max_object_pointers_in_encoder
    return edit_pointers(lambda offsets, pointers, limit: (offsets, pointers, cap))


def pointer_offsets_unnormalised(model):
    """Offsets not divided by P - 1 at all."""
    return edit_pointers(lambda offsets, pointers, limit: (offsets, pointers, 2))


def binarize_flag(flag: bool):
    def wrap(encode):
        def wrong(*args, **kwargs):
            kwargs["is_mask_from_pts"] = flag
            return encode(*args, **kwargs)

        return wrong

    return "_encode_new_memory", wrap


def never_binarize(model):
    """Memories of clicked frames from sigmoid masks too."""
    return binarize_flag(False)


def always_binarize(model):
    """Memories of tracked frames from binarized masks too."""
    return binarize_flag(True)


def per_object_binarize(model):
    """No batch quirk: an object's memory binarized only when that object had the prompt."""

    def wrap(encode_batch):
        def wrong(**kwargs):
            objects = kwargs.pop("objects_needing_memory_encoding")
            masks = kwargs.pop("high_res_masks_for_memory")
            scores = kwargs.pop("object_score_logits_for_memory")
            flags = kwargs.pop("is_mask_from_pts_per_obj")
            for obj, mask, score, flag in zip(objects, masks, scores, flags):
                encode_batch(
                    objects_needing_memory_encoding=[obj], high_res_masks_for_memory=[mask],
                    object_score_logits_for_memory=[score], is_mask_from_pts_per_obj=[flag], **kwargs,
                )

        return wrong

    return "_batch_encode_memories", wrap


def first_prompted_conditioning_frames(model):
    """With more conditioning frames than max_cond_frame_num, the first prompted ones selected
    instead of the closest in time."""

    def wrap(select):
        def wrong(frame_idx, cond_frame_outputs, max_cond_frame_num):
            if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
                return select(frame_idx, cond_frame_outputs, max_cond_frame_num)
            chosen = list(cond_frame_outputs)[:max_cond_frame_num]
            return (
                {t: cond_frame_outputs[t] for t in chosen},
                {t: out for t, out in cond_frame_outputs.items() if t not in chosen},
            )

        return wrong

    return "_select_closest_cond_frames", wrap


def selected_conditioning_pointers_only(model):
    """Pointers of the selected conditioning frames only (SAM2's rule) instead of every
    conditioning frame's at or before the frame (transformers')."""

    def wrap(get):
        def wrong(session, obj_idx, frame_idx, num_frames, device, reverse=False, streaming=False):
            offsets, pointers, limit = get(session, obj_idx, frame_idx, num_frames, device, reverse, streaming)
            cond = session.output_dict_per_obj[obj_idx]["cond_frame_outputs"]
            selected, _ = model._select_closest_cond_frames(frame_idx, cond, model.config.max_cond_frame_num)
            eligible = [t for t in cond if (t >= frame_idx if reverse else t <= frame_idx)]
            keep = [i for i, t in enumerate(eligible) if t in selected] + list(range(len(eligible), len(pointers)))
            return [offsets[i] for i in keep], [pointers[i] for i in keep], limit

        return wrong

    return "_get_object_pointers", wrap


def reverse_reads_the_past(model):
    """Backward tracking attends to the previous frames' memories (f - k) instead of the next
    frames' (f + k)."""

    def wrap(gather):
        def wrong(session, obj_idx, frame_idx, track_in_reverse_time=False):
            return gather(session, obj_idx, frame_idx, False)

        return wrong

    return "_gather_memory_frame_outputs", wrap


WRONG_RULES = [
    ("click", temporal_row_off_by_one),
    ("click", conditioning_row_zero),
    ("click", drop_farthest_memory),
    ("click", no_object_pointers),
    ("click", pointer_offset_off_by_one),
    ("click", pointer_offsets_over_uncapped_limit),
    ("click", pointer_offsets_unnormalised),
    ("click", never_binarize),
    ("click", always_binarize),
    ("two objects", per_object_binarize),
    ("five prompted frames", first_prompted_conditioning_frames),
    ("five prompted frames", selected_conditioning_pointers_only),
    ("backward", reverse_reads_the_past),
]


@contextlib.contextmanager
def wrong_rule(model, rule):
    name, wrap = rule(model)
    original = getattr(model, name)
    setattr(model, name, wrap(original))
    try:
        yield
    finally:
        setattr(model, name, original)


@contextlib.contextmanager
def float_noise(model, relative: float, seed: int = 0):
    """Relative noise on the memory encoder's float output (before the bfloat16 rounding, so
    some roundings flip) and on the memory attention's output: far more than the differences
    between the C++ tracker's graphs and the reference (1e-6 absolute)."""
    generator = torch.Generator().manual_seed(seed)

    def noisy(module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        first = first * (1 + relative * torch.randn(first.shape, generator=generator))
        return (first, *output[1:]) if isinstance(output, tuple) else first

    handles = [hook.register_forward_hook(noisy) for hook in (model.memory_encoder, model.memory_attention)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models' operations are small: one intra-op thread is many times faster on a
    shared machine than threads waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=PRESETS, ids=[preset for preset, _ in PRESETS])
def tracker(request, tmp_path_factory, one_thread):
    from export_sam3 import build_random_model

    preset, seed = request.param
    out = tmp_path_factory.mktemp(preset)
    build_random_model(preset, seed).save_pretrained(out / "hf")  # what the export writes to hf/
    tracker = Tracker(out / "hf", moving_shapes())
    tracker.preset = preset
    tracker.expected = {name: tracker.run(ops) for name, ops in SCENARIOS.items()}
    return tracker


def test_tracked_masks_are_partial_on_most_frames(tracker):
    """Non-empty (the random bundle's object-score bias) and not the whole frame, so that a
    changed memory can move a mask's boundary."""
    for name, outputs in tracker.expected.items():
        areas = [mask.mean() for _, mask in outputs]
        print(f"{tracker.preset} {name}: mask areas {' '.join(f'{a:.2f}' for a in areas)}")
        partial = sum(0.0 < area < 1.0 for area in areas)
        assert partial >= 0.8 * len(areas), (name, areas)


@pytest.mark.parametrize(
    "scenario, rule", WRONG_RULES, ids=[f"{scenario}-{rule.__name__}" for scenario, rule in WRONG_RULES]
)
def test_a_wrong_bookkeeping_rule_fails_the_parity_criterion(tracker, scenario, rule):
    with wrong_rule(tracker.model, rule):
        got = tracker.run(SCENARIOS[scenario])
    worst, where = worst_iou(tracker.expected[scenario], got)
    print(f"{tracker.preset} {scenario} / {rule.__name__}: min IoU {worst:.4f} ({where})")
    assert worst < MIN_IOU


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_float_noise_passes_the_parity_criterion(tracker, scenario):
    with float_noise(tracker.model, relative=1e-4):
        got = tracker.run(SCENARIOS[scenario])
    worst, where = worst_iou(tracker.expected[scenario], got)
    print(f"{tracker.preset} {scenario} / float noise 1e-4: min IoU {worst:.4f} ({where})")
    assert worst >= MIN_IOU


def test_the_scaled_weights_are_the_documented_factors(one_thread):
    """build_random_model = the plain random model with RANDOM_MEMORY_PATH_SCALES applied (and
    the object-score bias, and the detector's make_detections, which touches no tracker weight);
    nothing else differs."""
    import re

    from transformers import Sam3VideoModel

    from export_sam3 import (
        OBJECT_SCORE_BIAS,
        RANDOM_MEMORY_PATH_SCALES,
        RANDOM_OBJECT_SCORE_BIAS,
        build_random_model,
        make_detections,
        randomize_zero_parameters,
    )
    from sam3_tools.configs import tiny_config

    torch.manual_seed(0)
    plain = Sam3VideoModel(tiny_config("tiny")).eval()
    randomize_zero_parameters(plain)
    before = {name: parameter.detach().clone() for name, parameter in plain.named_parameters()}
    make_detections(plain)
    changed = {name for name, parameter in plain.named_parameters() if not torch.equal(parameter, before[name])}
    assert changed and all(name.startswith("detector_model.") for name in changed), changed
    plain = dict(plain.named_parameters())
    scaled = dict(build_random_model("tiny", 0).named_parameters())
    assert scaled.keys() == plain.keys()
    matched = {pattern: 0 for pattern in RANDOM_MEMORY_PATH_SCALES}
    for name, parameter in scaled.items():
        factors = [
            (pattern, factor) for pattern, factor in RANDOM_MEMORY_PATH_SCALES.items()
            if re.fullmatch("tracker_model." + pattern, name)
        ]
        assert len(factors) <= 1, name
        if name == OBJECT_SCORE_BIAS:
            assert torch.all(parameter == RANDOM_OBJECT_SCORE_BIAS)
        elif factors:
            matched[factors[0][0]] += 1
            assert torch.equal(parameter, plain[name] * factors[0][1]), name
        else:
            assert torch.equal(parameter, plain[name]), name
    assert all(matched.values()), matched


# The tests' synthetic videos: movingShapesFrames 96 x 72 (above) and conceptShapesFrames 112 x 84
# (test/helpers/videos.ts), as the concept parity tests use them.
def concept_shapes(width: int = 112, height: int = 84, count: int = 14) -> list[np.ndarray]:
    """test/helpers/videos.ts conceptShapesFrames: a red disc entering from the left, a yellow
    disc crossing it from the right, a green square appearing half way, a blue rectangle leaving
    through the bottom, over a graded background."""
    radius = max(3, js_round(min(width, height) / 7))
    side = max(3, js_round(min(width, height) / 5))
    rect_w, rect_h = max(3, js_round(width / 5)), max(3, js_round(height / 4))

    def at(start: float, end: float, i: int) -> int:
        return js_round(start + (end - start) * i / max(1, count - 1))

    yy, xx = np.mgrid[:height, :width]
    frames = []
    for i in range(count):
        red_x, yellow_x = at(-radius, width + radius, i), at(width + radius, -radius, i)
        disc_y, yellow_y = js_round(height / 3), js_round(height / 3 + radius / 2)
        square_x, square_y = js_round(width / 2 - side / 2), js_round(3 * height / 4 - side / 2)
        rect_x, rect_y = js_round(width / 10), at(js_round(height / 2), height + rect_h, i)
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[..., 0] = 70 + (30 * xx) // width
        rgb[..., 1] = 80 + (30 * yy) // height
        rgb[..., 2] = 90
        rgb[(xx >= rect_x) & (xx < rect_x + rect_w) & (yy >= rect_y) & (yy < rect_y + rect_h)] = (30, 40, 220)
        if i >= count // 2:
            square = (xx >= square_x) & (xx < square_x + side) & (yy >= square_y) & (yy < square_y + side)
            rgb[square] = (30, 200, 60)
        rgb[(xx - yellow_x) ** 2 + (yy - yellow_y) ** 2 <= radius**2] = (230, 210, 40)
        rgb[(xx - red_x) ** 2 + (yy - disc_y) ** 2 <= radius**2] = (220, 30, 30)
        frames.append(rgb)
    return frames


@pytest.mark.parametrize("preset,seed", PRESETS, ids=[preset for preset, _ in PRESETS])
@torch.no_grad()
def test_the_random_detector_detects_a_few_instances_that_change_as_the_shapes_move(one_thread, preset, seed):
    """export_sam3.make_detections: on the tests' synthetic videos, prompted "object" (text-only,
    one padding box, as the bundle's detector and the concept oracle take it), a few queries per
    frame score above new_det_thresh (0.7) and not all of them, which ones changing between
    frames, and their masks (logits >= 0.5, the tracker's mask inputs) are neither empty nor the
    whole frame. Counts are printed with -s."""
    from export_sam3 import build_random_model
    from sam3_tools.patches import install_roi_align
    from sam3_tools.reference_pipeline import PADDING_LABEL, preprocess
    from sam3_tools.vocab import open_clip_vocab
    from tokenizer_reference import build_tokenizer

    import tempfile

    install_roi_align()
    model = build_random_model(preset, seed)
    detector = model.detector_model
    resolution = model.config.tracker_config.image_size
    queries = model.config.detector_config.detr_decoder_config.num_queries
    with tempfile.TemporaryDirectory() as directory:
        tokens = build_tokenizer(str(open_clip_vocab()), directory)(
            ["object"], padding="max_length", truncation=True, max_length=32, return_tensors="pt"
        )
    text = detector.get_text_features(
        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], return_dict=True
    )
    for name, frames in (("movingShapes", moving_shapes()), ("conceptShapes", concept_shapes())):
        counts, detected, areas = [], [], []
        for rgb in frames:
            out = detector(
                vision_embeds=detector.get_vision_features(pixel_values=preprocess(rgb, resolution)),
                text_embeds=text, attention_mask=tokens["attention_mask"], input_boxes=torch.zeros(1, 1, 4),
                input_boxes_labels=torch.full((1, 1), PADDING_LABEL, dtype=torch.long),
            )
            scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
            keep = scores > 0.7
            counts.append(int(keep.sum()))
            detected.append(frozenset(torch.nonzero(keep).flatten().tolist()))
            areas += (out.pred_masks[0][keep] >= 0.5).flatten(1).float().mean(1).tolist()
        print(f"{preset} {name}: detections > 0.7 per frame {counts}, mask areas {min(areas):.2f}-{max(areas):.2f}")
        assert sum(counts) >= len(frames) // 2 and max(counts) <= min(10, queries // 3), counts
        assert len(set(detected)) >= 3, "the detected queries hardly change between frames"
        assert 0.01 <= min(areas) and max(areas) <= 0.6, areas
