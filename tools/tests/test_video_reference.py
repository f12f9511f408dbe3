"""tools/video_reference.py on a synthetic lossless video: prompt / propagate / remove / reset
semantics of the API, on a random bundle checkpoint built as --tiny-random builds it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3_tools.reference_pipeline import mask_box

TOOLS = Path(__file__).resolve().parents[1]
FRAMES, HEIGHT, WIDTH = 12, 48, 64


def synthetic_frames() -> list[np.ndarray]:
    """A red rectangle moving right and a green disc moving left on a dark blue background."""
    frames = []
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for t in range(FRAMES):
        rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        rgb[..., 2] = 40
        rgb[12:28, 4 + 3 * t : 20 + 3 * t] = (230, 60, 40)
        rgb[(yy - 34) ** 2 + (xx - (54 - 2 * t)) ** 2 < 49] = (40, 220, 90)
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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from export_sam3 import build_random_model

    out = tmp_path_factory.mktemp("bundle")
    build_random_model("tiny", 0).save_pretrained(out / "hf")
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    write_video(path, synthetic_frames())
    return path


def run_reference(bundle: Path, video: Path, ops: list[dict]) -> dict:
    script = json.dumps({"video": str(video), "ops": ops})
    done = subprocess.run(
        [sys.executable, str(TOOLS / "video_reference.py"), "--bundle", str(bundle)],
        input=script, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)


def decode(mask: dict) -> np.ndarray:
    return mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode("ascii")}).astype(bool)


def frame_numbers(result: dict) -> list[int]:
    return [frame["frame"] for frame in result["frames"]]


def ids(frame: dict) -> list[int]:
    return [obj["id"] for obj in frame["objects"]]


def test_the_test_video_decodes_to_the_frames_written(video):
    from video_reference import decode_video

    decoded = decode_video(str(video))
    assert len(decoded) == FRAMES
    for got, want in zip(decoded, synthetic_frames()):
        assert np.array_equal(got, want)


def test_a_script_of_prompts_propagations_removals_and_resets(bundle, video):
    rect = {"op": "prompt", "frame": 0, "obj_id": 1, "points": [[12 / WIDTH, 20 / HEIGHT]], "point_labels": [1],
            "box": None}
    disc = {"op": "prompt", "frame": 3, "obj_id": 2, "points": [], "point_labels": [],
            "box": [48 / WIDTH, 34 / HEIGHT, 16 / WIDTH, 16 / HEIGHT]}
    ops = [
        rect,  # 0
        {"op": "propagate", "direction": "forward", "start": None, "max_frames": None},  # 1
        {"op": "propagate", "direction": "backward", "start": 0, "max_frames": None},  # 2
        {"op": "propagate", "direction": "forward", "start": 4, "max_frames": 3},  # 3
        disc,  # 4
        {"op": "propagate", "direction": "both", "start": 3, "max_frames": 2},  # 5
        {"op": "propagate", "direction": "forward", "start": 6, "max_frames": 3},  # 6
        {"op": "remove", "obj_id": 1},  # 7
        {"op": "remove", "obj_id": 1},  # 8
        {"op": "propagate", "direction": "forward", "start": 6, "max_frames": 3},  # 9
        {"op": "reset"},  # 10
        {"op": "propagate", "direction": "forward"},  # 11
        {"op": "prompt", "frame": 2, "obj_id": 7, "points": [[0.5, 0.5], [0.1, 0.1]], "point_labels": [1, 0],
         "box": None},  # 12
        {"op": "propagate", "direction": "backward", "start": 1, "max_frames": None},  # 13
        {"op": "prompt", "frame": FRAMES, "obj_id": 7, "points": [[0.5, 0.5]], "point_labels": [1]},  # 14
    ]
    out = run_reference(bundle, video, ops)
    results = out["results"]
    assert out["video_info"] == {"frames": FRAMES, "width": WIDTH, "height": HEIGHT}
    assert len(out["timing"]["per_op_ms"]) == len(ops)
    assert [fps is not None for fps in out["timing"]["frames_per_second"]] == [
        "frames" in result for result in results
    ]

    # Every object result is self-consistent: mask size, box = bounds of the mask, presence.
    nonempty = 0
    for result in results:
        for frame in result.get("frames", [result] if "objects" in result else []):
            for obj in frame["objects"]:
                mask = decode(obj["mask"])
                assert obj["mask"]["size"] == [HEIGHT, WIDTH]
                assert obj["box"] == mask_box(mask)
                assert obj["present"] == (obj["object_score_logit"] > 0)
                assert 0.0 <= obj["score"] <= 1.0
                if not obj["present"]:
                    assert not mask.any()
                nonempty += int(mask.any())

    # The click on frame 0, then forward over the whole video: frame 0 is the stored
    # conditioning output (reused as is), every frame in order, masks on most frames.
    assert ids(results[0]) == [1] and results[0]["frame"] == 0
    assert frame_numbers(results[1]) == list(range(FRAMES))
    assert results[1]["frames"][0] == {"frame": 0, "objects": results[0]["objects"]}
    tracked = [decode(frame["objects"][0]["mask"]).any() for frame in results[1]["frames"]]
    assert sum(tracked) >= FRAMES - 2
    # Backward from frame 0 still outputs frame 0.
    assert results[2] == {"frames": [{"frame": 0, "objects": results[0]["objects"]}]}
    assert frame_numbers(results[3]) == [4, 5, 6]
    # A second object: both are reported on its prompt frame, in creation order.
    assert results[4]["frame"] == 3 and ids(results[4]) == [1, 2]
    # both = forward from 3, then backward from 2, max_frames per direction.
    assert frame_numbers(results[5]) == [3, 4, 2, 1]
    assert all(ids(frame) == [1, 2] for frame in results[5]["frames"] + results[6]["frames"])
    assert results[7] == {"removed": True} and results[8] == {"removed": False}
    # After the removal the other object keeps its own state: the same frames again give the
    # same results for it (the memory encoder ran batched before, alone now: float noise only).
    assert frame_numbers(results[9]) == [6, 7, 8]
    for before, after in zip(results[6]["frames"], results[9]["frames"]):
        assert ids(after) == [2]
        old, new = before["objects"][1], after["objects"][0]
        assert abs(old["object_score_logit"] - new["object_score_logit"]) < 1e-4
        assert abs(old["score"] - new["score"]) < 1e-4
        assert (decode(old["mask"]) != decode(new["mask"])).mean() < 0.002
    assert results[10] == {"cleared": 1}
    assert results[11] == {"error": "ValueError: nothing to propagate: no objects"}
    # A new object after the reset is alone; backward from 1 processes 1 then 0.
    assert results[12]["frame"] == 2 and ids(results[12]) == [7]
    assert frame_numbers(results[13]) == [1, 0]
    assert "error" in results[14] and "outside the video" in results[14]["error"]
    assert nonempty > 0
