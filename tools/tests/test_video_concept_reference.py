"""tools/video_concept_reference.py on a synthetic lossless video: concept / propagate / refine /
remove / remove_concept / reset semantics of docs/video-concepts.md, the hotstart output buffer,
the build_outputs misalignment patch and the --official-postprocess kernels.

The checkpoint is the one of a --tiny-random export (export_sam3.build_random_model, whose
detector is biased to find a few instances) with three settings of its config changed, so that
every test sees objects of both concepts, some of them new on later frames, whatever the exact
tuning of that bias: lower detection thresholds (DETECTION_THRESHOLDS) and a small object limit
(MAX_OBJECTS, which also keeps the tracker cheap: it runs once per object). torch runs on one
thread: on a loaded 2-core machine two threads are many times slower.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sam3_tools.reference_pipeline import mask_box

TOOLS = Path(__file__).resolve().parents[1]
FRAMES, WIDTH, HEIGHT = 8, 64, 48
MAX_OBJECTS = 4
# (score_threshold_detection, new_det_thresh) of the test checkpoint (transformers: 0.5, 0.7).
DETECTION_THRESHOLDS = (0.3, 0.4)
TEXTS = ["red disc", "shape"]

# pycocotools' decode under numpy 2 (harmless, and many calls here).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def js_round(value: float) -> int:
    return math.floor(value + 0.5)


def concept_shapes(width: int = WIDTH, height: int = HEIGHT, count: int = FRAMES) -> list[np.ndarray]:
    """test/helpers/videos.ts conceptShapesFrames: a red disc enters from the left and leaves on
    the right, a yellow disc crosses it from the right, a green square appears half way through,
    a blue rectangle leaves through the bottom; a plain graded background."""
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
            rgb[(xx >= square_x) & (xx < square_x + side) & (yy >= square_y) & (yy < square_y + side)] = (30, 200, 60)
        rgb[(xx - yellow_x) ** 2 + (yy - yellow_y) ** 2 <= radius**2] = (230, 210, 40)
        rgb[(xx - red_x) ** 2 + (yy - disc_y) ** 2 <= radius**2] = (220, 30, 30)
        frames.append(rgb)
    return frames


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "rgb24"
        stream.options = {"qp": "0"}  # lossless
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from export_sam3 import build_random_model

    out = tmp_path_factory.mktemp("concept-bundle")
    model = build_random_model("tiny", 0)
    model.config.max_num_objects = MAX_OBJECTS
    model.config.score_threshold_detection, model.config.new_det_thresh = DETECTION_THRESHOLDS
    model.save_pretrained(out / "hf")
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("concept-video") / "shapes.mp4"
    write_video(path, concept_shapes())
    return path


@pytest.fixture(scope="module")
def frames(video):
    from video_reference import decode_video

    decoded = decode_video(str(video))
    assert len(decoded) == FRAMES and all(np.array_equal(a, b) for a, b in zip(decoded, concept_shapes()))
    return decoded


@pytest.fixture(scope="module")
def reference(bundle):
    from video_concept_reference import ConceptVideoReference, install_postprocess_kernels, tokenizer_for

    ref = ConceptVideoReference(str(bundle / "hf"), "cpu", tokenizer_for(bundle))
    yield ref
    install_postprocess_kernels(False)


@pytest.fixture
def ref(reference, frames):
    """The module's reference on a fresh session, its model's settings restored after the test."""
    model = reference.model
    saved = {name: getattr(model, name) for name in ("hotstart_unmatch_thresh", "hotstart_dup_thresh")}
    patched = ("run_tracker_update_planning_phase", "build_outputs", "run_detection")
    methods = {name: getattr(model, name) for name in patched}
    reference.open(frames)
    with torch.inference_mode():
        yield reference
    for name, value in {**saved, **methods}.items():
        setattr(model, name, value)
    assert model.hotstart_delay == reference.default_hotstart_delay


def run(ref, op: dict) -> dict:
    result = ref.execute(op)
    assert "error" not in result, result
    return result


def concept(frame: int = 0, texts=TEXTS) -> dict:
    return {"op": "concept", "frame": frame, "texts": list(texts)}


def propagate(direction="forward", start=None, max_frames=None, delay=None) -> dict:
    return {
        "op": "propagate", "direction": direction, "start": start, "max_frames": max_frames, "hotstart_delay": delay,
    }


def decode(mask: dict) -> np.ndarray:
    return mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode("ascii")}).astype(bool)


def frame_numbers(result: dict) -> list[int]:
    return [frame["frame"] for frame in result["frames"]]


def ids(frame: dict) -> list[int]:
    return [obj["id"] for obj in frame["objects"]]


def all_frames(results: list[dict]) -> list[dict]:
    return [frame for result in results for frame in result.get("frames", [result] if "objects" in result else [])]


def check_objects(frame: dict) -> None:
    """Each object is self-consistent: id order, mask size, box = bounds of the mask, and within
    a concept no pixel belongs to two objects."""
    assert ids(frame) == sorted(ids(frame))
    claimed: dict[int, np.ndarray] = {}
    for obj in frame["objects"]:
        mask = decode(obj["mask"])
        assert obj["mask"]["size"] == [HEIGHT, WIDTH]
        assert obj["box"] == mask_box(mask)
        assert obj["concept_id"] >= 1 and obj["id"] >= 1
        assert 0.0 <= obj["score"] <= 1.0 and 0.0 <= obj["tracker_score"] <= 1.0
        taken = claimed.setdefault(obj["concept_id"], np.zeros_like(mask))
        assert not (taken & mask).any()
        taken |= mask


def test_concept_and_propagation_order(ref):
    first = run(ref, concept(0, TEXTS + TEXTS[:1]))
    # The same text twice is the same concept; ids are the reference's + 1.
    assert first["frame"] == 0
    assert first["concepts"] == [{"id": 1, "text": TEXTS[0]}, {"id": 2, "text": TEXTS[1]}]
    assert ref.session.prompts == {0: TEXTS[0], 1: TEXTS[1]}
    assert first["objects"], "the biased detector finds objects"
    assert ids(first) == list(range(1, len(first["objects"]) + 1))
    assert {obj["concept_id"] for obj in first["objects"]} <= {1, 2}
    assert len(first["objects"]) <= MAX_OBJECTS
    for obj in first["objects"]:
        assert obj["concept_id"] == ref.session.obj_id_to_prompt_id[obj["id"] - 1] + 1

    forward = run(ref, propagate(delay=3))  # start: the concept's frame
    assert frame_numbers(forward) == list(range(FRAMES))
    assert sum(len(frame["objects"]) for frame in forward["frames"]) > 0
    backward = run(ref, propagate("backward", start=5, max_frames=3, delay=0))
    assert frame_numbers(backward) == [5, 4, 3]
    both = run(ref, propagate("both", start=4, max_frames=2))
    assert frame_numbers(both) == [4, 5, 3, 2]
    assert frame_numbers(run(ref, propagate("backward", start=0))) == [0]
    last = run(ref, propagate("both", start=FRAMES - 1, max_frames=1, delay=0))
    assert frame_numbers(last) == [FRAMES - 1, FRAMES - 2]
    for frame in all_frames([first, forward, backward, both]):
        check_objects(frame)
    outside = f"ValueError: start {FRAMES} is outside the video (0..{FRAMES - 1})"
    assert ref.execute(propagate(start=FRAMES)) == {"error": outside}
    assert "error" in ref.execute(propagate("sideways"))
    assert "error" in ref.execute(concept(0, []))


def test_hotstart_buffer_emission(ref, frames):
    run(ref, concept(0))
    run(ref, propagate(delay=3))
    # Frame i of a run of n leaves the buffer when i + d frames are computed; the run's last
    # frame flushes the rest.
    assert ref.emissions == [(i, min(i + 3, FRAMES)) for i in range(FRAMES)]
    assert ref.emissions[0] == (0, 3)
    delayed = ref.emissions
    run(ref, propagate("backward", start=6, max_frames=4, delay=2))
    assert ref.emissions == [(6, 2), (5, 3), (4, 4), (3, 4)]
    run(ref, propagate("both", start=3, max_frames=2, delay=5))  # each direction its own run
    assert ref.emissions == [(3, 2), (4, 2), (2, 2), (1, 2)]
    assert ref.model.hotstart_delay == ref.default_hotstart_delay  # restored after the op

    ref.open(frames)
    run(ref, concept(0))
    immediate = run(ref, propagate(delay=0))
    assert ref.emissions == [(i, i + 1) for i in range(FRAMES)]
    assert [frame for frame, _ in delayed] == frame_numbers(immediate)  # the same frames


def test_build_outputs_uses_the_ids_before_the_update(ref):
    """Hotstart removes objects that are not the last: each remaining object keeps its own
    tracker mask and tracker score (transformers would shift them onto the next ids)."""
    model = ref.model
    model.hotstart_unmatch_thresh = 2  # with the long delay below, unmatched tracks soon go
    planned, built = [], []
    planning, build = model.run_tracker_update_planning_phase, model.build_outputs

    def record_plan(*args, **kwargs):
        plan, metadata = planning(*args, **kwargs)
        planned.append((
            kwargs["frame_idx"], list(kwargs["inference_session"].obj_ids), plan,
            kwargs["tracker_low_res_masks_global"], kwargs["tracker_obj_scores_global"].clone(),
        ))
        return plan, metadata

    def record_build(*args, **kwargs):
        out = build(*args, **kwargs)
        built.append(out)
        return out

    model.run_tracker_update_planning_phase = record_plan
    model.build_outputs = record_build
    outputs = []
    forward = model.forward

    def record_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        outputs.append(out)
        return out

    model.forward = record_forward
    try:
        run(ref, concept(0))
        result = run(ref, propagate(delay=FRAMES))
    finally:
        model.forward = forward
    assert frame_numbers(result) == list(range(FRAMES))
    checked = 0
    for (frame, before, plan, masks, scores), obj_id_to_mask, out in zip(planned, built, outputs):
        removed = plan["obj_ids_newly_removed"]
        kept = [oid for oid in before if oid not in removed and oid not in plan["reconditioned_obj_ids"]]
        if not any(before.index(r) < before.index(k) for r in removed for k in kept):
            continue  # no removed object followed by one that stays
        after = [oid for oid in before + plan["new_det_obj_ids"] if oid not in removed]
        for oid in kept:
            index = before.index(oid)
            assert torch.equal(obj_id_to_mask[oid][0], masks[index])
            assert out.obj_id_to_tracker_score[oid] == pytest.approx(float(torch.sigmoid(scores[index])))
        # transformers' zip(after, masks) would have given some kept object another one's mask.
        shifted = dict(zip(after, masks))
        assert any(not torch.equal(shifted[oid], masks[before.index(oid)]) for oid in kept if oid in shifted)
        # The removed ones are hidden from then on (the buffer held their earlier frames).
        assert removed <= ref.session.hotstart_removed_obj_ids
        checked += 1
    assert checked > 0, "no hotstart removal of an object that is not the last"
    hidden = {oid + 1 for oid in ref.session.hotstart_removed_obj_ids}
    for frame in result["frames"]:
        assert not hidden & set(ids(frame))
        check_objects(frame)


def test_remove_and_remove_concept(ref):
    run(ref, concept(0))
    session = ref.session
    run(ref, propagate(max_frames=2, delay=0))
    live = {oid + 1: session.obj_id_to_prompt_id[oid] + 1 for oid in session.obj_ids}
    assert len(live) >= 2, live

    # remove: gone; removing it again says so; the detector may find the instance again later,
    # as a new object with a new id.
    victim = min(live)
    max_before = session.max_obj_id + 1
    assert run(ref, {"op": "remove", "obj_id": victim}) == {"removed": True}
    assert victim - 1 not in session.obj_ids
    assert run(ref, {"op": "remove", "obj_id": victim}) == {"removed": False}
    later = run(ref, propagate(start=2, max_frames=2, delay=0))
    assert all(victim not in ids(frame) for frame in later["frames"])
    assert all(oid in live or oid > max_before for frame in later["frames"] for oid in ids(frame))

    # remove_concept: every object of the concept, and the prompt is no longer detected; the
    # other concept keeps its id and is still detected.
    by_concept = {
        c: sorted(oid + 1 for oid in session.obj_ids if session.obj_id_to_prompt_id[oid] + 1 == c) for c in (1, 2)
    }
    gone = max((1, 2), key=lambda c: (len(by_concept[c]), -c))
    kept = 3 - gone
    assert by_concept[gone]
    assert run(ref, {"op": "remove_concept", "concept_id": gone}) == {"removed_objects": by_concept[gone]}
    assert session.prompts == {kept - 1: TEXTS[kept - 1]}
    assert sorted(session.obj_id_to_prompt_id[oid] for oid in session.obj_ids) == [kept - 1] * len(by_concept[kept])
    for table in (session.prompt_input_ids, session.prompt_attention_masks, session.prompt_embeddings):
        assert gone - 1 not in table and kept - 1 in table
    detected = []
    detection = ref.model.run_detection

    def record_detection(*args, **kwargs):
        out = detection(*args, **kwargs)
        detected.append(sorted(out))
        return out

    ref.model.run_detection = record_detection
    after = run(ref, propagate(start=4, max_frames=3, delay=0))
    assert detected == [[kept - 1]] * 3
    assert all(obj["concept_id"] == kept for frame in after["frames"] for obj in frame["objects"])
    assert "error" in ref.execute({"op": "remove_concept", "concept_id": gone})
    # A new concept gets a new id (transformers' add_prompt would give len(prompts) = 1 again).
    third = run(ref, concept(6, ["circle", TEXTS[kept - 1]]))
    assert third["concepts"] == [{"id": 3, "text": "circle"}, {"id": kept, "text": TEXTS[kept - 1]}]
    assert session.prompts == {kept - 1: TEXTS[kept - 1], 2: "circle"}

    # reset: everything cleared, ids go on.
    highest, count = session.max_obj_id + 1, len(session.obj_ids)
    assert run(ref, {"op": "reset"}) == {"cleared": count}
    assert ref.session.prompts == {} and ref.session.obj_ids == [] and ref.session.max_obj_id + 1 == highest
    assert ref.execute(propagate()) == {"error": "ValueError: nothing to propagate: no concepts"}
    fresh = run(ref, concept(0, TEXTS[:1]))
    assert fresh["concepts"] == [{"id": 4, "text": TEXTS[0]}]
    assert fresh["objects"] and min(ids(fresh)) == highest + 1


def test_refine_replaces_the_objects_inputs(ref):
    run(ref, concept(0))
    tracked = run(ref, propagate(max_frames=4, delay=0))
    frame = tracked["frames"][2]
    assert frame["frame"] == 2 and frame["objects"]
    target = frame["objects"][0]
    before = decode(target["mask"])
    obj_idx = ref.session.obj_id_to_idx(target["id"] - 1)
    # A box in the lower right corner and a negative click inside it.
    op = {"op": "refine", "frame": 2, "obj_id": target["id"], "points": [[0.8, 0.8]], "point_labels": [0],
          "box": [0.8, 0.75, 0.3, 0.4]}
    refined = run(ref, op)
    assert refined["frame"] == 2
    check_objects(refined)
    after = {obj["id"]: obj for obj in refined["objects"]}
    assert target["id"] in after, "the refined object is shown"
    obj = after[target["id"]]
    assert obj["score"] == 1.0 and obj["tracker_score"] == 1.0
    assert (decode(obj["mask"]) != before).any(), "refining changed the mask"
    inputs = ref.session.point_inputs_per_obj[obj_idx][2]
    assert inputs["point_labels"].tolist() == [[[2, 3, 0]]]
    scale = ref.resolution
    expected = [[0.65 * scale, 0.55 * scale], [0.95 * scale, 0.95 * scale], [0.8 * scale, 0.8 * scale]]
    assert torch.allclose(inputs["point_coords"][0, 0], torch.tensor(expected, dtype=torch.float32))
    assert 2 not in ref.session.mask_inputs_per_obj[obj_idx]
    # Other objects keep the tracker scores stored for the frame when it was tracked.
    tracked_scores = {other["id"]: other["tracker_score"] for other in frame["objects"]}
    for other in refined["objects"]:
        if other["id"] != target["id"] and other["id"] in tracked_scores:
            assert other["tracker_score"] == tracked_scores[other["id"]]
    # Tracking on from the refined frame uses the new conditioning.
    assert frame_numbers(run(ref, propagate(start=2, max_frames=2, delay=0))) == [2, 3]
    assert "error" in ref.execute({**op, "obj_id": 999})
    assert "error" in ref.execute({**op, "points": [], "point_labels": [], "box": None})
    assert "error" in ref.execute({**op, "frame": FRAMES})


def test_official_postprocess_runs_the_twins(ref, frames):
    from video_concept_reference import install_postprocess_kernels

    plain = run(ref, concept(0))
    plain_frames = run(ref, propagate(max_frames=3, delay=0))
    kernels = install_postprocess_kernels(True)
    calls = {"generic_nms": 0, "cc_2d": 0}
    nms = []  # (kept, valid) detections of each NMS

    def counting(name):
        method = getattr(kernels, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            out = method(*args, **kwargs)
            if name == "generic_nms":
                nms.append((len(out), len(args[1])))
            return out

        return wrapper

    kernels.generic_nms, kernels.cc_2d = counting("generic_nms"), counting("cc_2d")
    try:
        ref.open(frames)
        official = run(ref, concept(0))
        official_frames = run(ref, propagate(max_frames=3, delay=0))
    finally:
        install_postprocess_kernels(False)
    assert calls["generic_nms"] > 0 and calls["cc_2d"] > 0
    # The random detector's masks overlap: NMS drops some, and other detections become objects.
    assert any(kept < valid for kept, valid in nms), nms
    assert official["objects"]

    def summary(frame: dict) -> list[tuple]:
        return [(obj["id"], obj["concept_id"], obj["score"], obj["mask"]["counts"]) for obj in frame["objects"]]

    assert summary(official) != summary(plain) or [summary(f) for f in official_frames["frames"]] != [
        summary(f) for f in plain_frames["frames"]
    ]


def test_the_command_line_matches_the_library(bundle, video, reference, frames):
    ops = [
        concept(0),
        propagate(max_frames=3, delay=2),
        {"op": "remove_concept", "concept_id": 2},
        {"op": "reset"},
        {"op": "frobnicate"},
        concept(FRAMES),
    ]
    script = json.dumps({"video": str(video), "ops": ops})
    done = subprocess.run(
        [sys.executable, str(TOOLS / "video_concept_reference.py"), "--bundle", str(bundle), "--threads", "1"],
        input=script, capture_output=True, text=True, check=True,
    )
    out = json.loads(done.stdout)
    assert out["video_info"] == {"frames": FRAMES, "width": WIDTH, "height": HEIGHT}
    timing = out["timing"]
    assert len(timing["per_op_ms"]) == len(timing["frames_per_second"]) == len(timing["per_frame_ms"]) == len(ops)
    assert [len(steps) if steps else 0 for steps in timing["per_frame_ms"]] == [1, 3, 0, 0, 0, 0]
    results = out["results"]
    assert results[4] == {"error": "ValueError: unknown op 'frobnicate'"}
    assert results[5] == {"error": f"ValueError: frame {FRAMES} is outside the video (0..{FRAMES - 1})"}
    reference.open(frames)
    with torch.inference_mode():
        expected = [reference.execute(op) for op in ops]
    assert results == expected
