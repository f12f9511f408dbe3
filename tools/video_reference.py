#!/usr/bin/env python3
"""The video correctness oracle: transformers' SAM3 video tracker on a script of operations, as JSON.

  video_reference.py --bundle <bundle dir> [--model <hf dir>] [--device cpu] < script.json

script.json: {"video": "<file>", ["raw": {"width", "height"},] "ops": [
    {"op": "prompt", "frame": 0, "obj_id": 1, "points": [[x, y]], "point_labels": [1], "box": null},
    {"op": "propagate", "direction": "forward" | "backward" | "both", "start": null, "max_frames": null},
    {"op": "remove", "obj_id": 1},
    {"op": "reset"}]}

The model is transformers' Sam3TrackerVideoModel loaded from the bundle's hf/ copy (random
bundles) or from --model. Frames are decoded with PyAV as RGB24 (tests write lossless videos, so
both sides start from the same pixels) and preprocessed as the server's image path does
(sam3_tools.reference_pipeline.preprocess).

Operations, with the server's API semantics (docs/video-internals.md):
- prompt: points (normalized x, y; labels 1 / 0) and an optional box (normalized cx, cy, w, h)
  for one object on one frame, in pixels of the R x R model input; the box is two points
  labelled 2, 3 before the clicks, as transformers' processor adds it. They replace that
  object's earlier inputs on that frame; then the model runs on that frame (all objects).
  Result: {"frame", "objects": [every object on that frame]}.
- propagate: start defaults to the first frame holding a conditioning output of any object;
  max_frames is the number of frames processed per direction (null: to the end of the video).
  forward: start, start + 1, ...; backward: start, start - 1, ..., 0 (transformers' iterator does
  nothing in reverse from frame 0: frame 0 is then run alone, in reverse); both: forward from
  start, then backward from start - 1. Result: {"frames": [{"frame", "objects"}, ...]} in
  processing order.
- remove: drops the object (what Sam3VideoInferenceSession.remove_object does; the tracker's
  session has no such method). Result: {"removed": bool}.
- reset: clears the tracking state (objects, inputs, outputs). Result: {"cleared": objects}.
An op that cannot run (unknown op, frame outside the video, nothing to propagate) gives
{"error": "<message>"} and the script goes on.

Each object: {"id", "present": object score logit > 0, "score": predicted IoU of the chosen mask
(captured from the mask decoder; for a conditioning frame reused without compute, the value from
when it was computed), "object_score_logit", "box": [cx, cy, w, h] normalized bounds of the
mask (zeros when empty), "mask": {"size": [H, W], "counts": COCO RLE}}; the mask is the low-res
logits resized bilinearly (align_corners false, no antialias) to H x W and binarized at > 0.

Prints {"video_info": {"frames", "width", "height"}, "results": [one per op],
        "timing": {"load_ms", "decode_ms", "per_op_ms": [...], "frames_per_second": [per op; null
        unless a propagation]}, "peak_rss_mb"}.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sam3_tools.reference_pipeline import encode_rle, mask_box, preprocess  # noqa: E402


def decode_video(path: str, raw: dict | None = None) -> list[np.ndarray]:
    """Every frame of the first video stream as uint8 RGB [H, W, 3]. With `raw`
    ({"width", "height"}), `path` holds concatenated raw RGB24 frames instead (bench/gpu: no
    video encoder there)."""
    if raw is not None:
        width, height = int(raw["width"]), int(raw["height"])
        data = np.fromfile(path, dtype=np.uint8)
        return list(data.reshape(-1, height, width, 3))
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def prompt_pixels(op: dict, resolution: int) -> tuple[list[list[float]], list[int]]:
    """An op's clicks (normalized x, y; labels 1 / 0) and optional box (normalized cx, cy, w, h)
    as the tracker takes them: pixels of the R x R input, computed in double (float32 later), a
    box as two points labelled 2, 3 before the clicks (transformers' processor)."""
    scale = float(resolution)
    points = [[float(x) * scale, float(y) * scale] for x, y in op.get("points") or []]
    labels = [int(label) for label in op.get("point_labels") or []]
    if len(points) != len(labels):
        raise ValueError("points and point_labels differ in length")
    box = op.get("box")
    if box is not None:
        cx, cy, w, h = (float(v) for v in box)
        corners = [[(cx - w / 2) * scale, (cy - h / 2) * scale], [(cx + w / 2) * scale, (cy + h / 2) * scale]]
        points, labels = corners + points, [2, 3] + labels
    return points, labels


def remove_object(session, obj_id: int) -> bool:
    """Removes one object from a Sam3TrackerVideoInferenceSession, as transformers'
    Sam3VideoInferenceSession.remove_object does: the last object resets the tracking state;
    otherwise the later objects move down one index, their state with them."""
    if obj_id not in session._obj_id_to_idx:
        return False
    if obj_id in session.obj_with_new_inputs:
        session.obj_with_new_inputs.remove(obj_id)
    if len(session._obj_id_to_idx) == 1:
        session.reset_tracking_data()
        return True
    removed = session._obj_id_to_idx[obj_id]
    kept = [i for i in range(len(session.obj_ids)) if i != removed]
    new_ids = [session.obj_ids[i] for i in kept]
    session._obj_id_to_idx.clear()
    session._obj_idx_to_id.clear()
    for new_idx, object_id in enumerate(new_ids):
        session._obj_id_to_idx[object_id] = new_idx
        session._obj_idx_to_id[new_idx] = object_id
    session.obj_ids = new_ids
    for container in (
        session.point_inputs_per_obj,
        session.mask_inputs_per_obj,
        session.output_dict_per_obj,
        session.frames_tracked_per_obj,
    ):
        values = [container[i] for i in kept]
        container.clear()
        container.update(enumerate(values))
    return True


class VideoReference:
    def __init__(self, source: str, device: str):
        from transformers import Sam3TrackerVideoModel

        self.device = device
        self.model = Sam3TrackerVideoModel.from_pretrained(source).eval().to(device)
        self.resolution = int(self.model.config.image_size)
        self.session = None
        self.height = self.width = 0
        # Predicted IoU of the chosen mask per (object id, frame), captured from the model's own
        # decoding (transformers computes it but does not return it from forward).
        self.iou: dict[tuple[int, int], float] = {}
        self._last_iou: float | None = None
        single_frame_forward = self.model._single_frame_forward
        run_single_frame = self.model._run_single_frame_inference

        def capture_iou(*args, **kwargs):
            out = single_frame_forward(*args, **kwargs)
            # K = 3 masks: the best predicted IoU is the chosen one; K = 1: the only one.
            self._last_iou = float(out.iou_scores.reshape(-1).max())
            return out

        def record_iou(*args, **kwargs):
            self._last_iou = None
            out = run_single_frame(*args, **kwargs)
            obj_id = kwargs["inference_session"].obj_idx_to_id(kwargs["obj_idx"])
            self.iou[(obj_id, kwargs["frame_idx"])] = self._last_iou
            return out

        self.model._single_frame_forward = capture_iou
        self.model._run_single_frame_inference = record_iou

    def open(self, frames: list[np.ndarray]) -> None:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

        self.height, self.width = frames[0].shape[:2]
        video = torch.cat([preprocess(rgb, self.resolution) for rgb in frames])
        self.session = Sam3TrackerVideoInferenceSession(
            video=video,
            video_height=self.height,
            video_width=self.width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=torch.float32,
        )

    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    def objects(self, out) -> list[dict]:
        logits = out.pred_masks  # [objects, 1, 4G, 4G]
        if logits.shape[0] == 0:
            return []
        resized = F.interpolate(logits.float(), size=(self.height, self.width), mode="bilinear", align_corners=False)
        masks = (resized[:, 0] > 0).cpu().numpy()
        scores = out.object_score_logits.reshape(-1).tolist()
        results = []
        for obj_id, mask, logit in zip(out.object_ids, masks, scores):
            results.append({
                "id": int(obj_id),
                "present": bool(logit > 0),
                "score": self.iou.get((int(obj_id), int(out.frame_idx))),
                "object_score_logit": float(logit),
                "box": mask_box(mask),
                "mask": encode_rle(mask),
            })
        return results

    def frame_result(self, frame: int, reverse: bool) -> dict:
        out = self.model(self.session, frame_idx=frame, reverse=reverse)
        return {"frame": int(frame), "objects": self.objects(out)}

    def prompt(self, op: dict) -> dict:
        frame, obj_id = int(op["frame"]), int(op["obj_id"])
        if not 0 <= frame < self.num_frames:
            raise ValueError(f"frame {frame} is outside the video (0..{self.num_frames - 1})")
        points, labels = prompt_pixels(op, self.resolution)
        if not points:
            raise ValueError("a prompt needs points or a box")
        obj_idx = self.session.obj_id_to_idx(obj_id)
        self.session.add_point_inputs(obj_idx, frame, {
            "point_coords": torch.tensor([[points]], dtype=torch.float32),
            "point_labels": torch.tensor([[labels]], dtype=torch.int32),
        })
        self.session.remove_mask_inputs(obj_idx, frame)
        self.session.obj_with_new_inputs = [obj_id]
        return self.frame_result(frame, reverse=False)

    def _direction(self, start: int, max_frames: int | None, reverse: bool) -> list[dict]:
        if reverse and start == 0:
            # transformers' iterator skips reverse tracking from frame 0; the API still processes it.
            return [self.frame_result(0, reverse=True)]
        limit = None if max_frames is None else max_frames - 1
        return [
            {"frame": int(out.frame_idx), "objects": self.objects(out)}
            for out in self.model.propagate_in_video_iterator(
                self.session, start_frame_idx=start, max_frame_num_to_track=limit, reverse=reverse
            )
        ]

    def propagate(self, op: dict) -> dict:
        direction = op.get("direction", "forward")
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"unknown direction {direction!r}")
        if not self.session.obj_ids:
            raise ValueError("nothing to propagate: no objects")
        start = op.get("start")
        if start is None:
            prompted = [f for out in self.session.output_dict_per_obj.values() for f in out["cond_frame_outputs"]]
            if not prompted:
                raise ValueError("nothing to propagate: no object has a prompted frame")
            start = min(prompted)
        start = int(start)
        if not 0 <= start < self.num_frames:
            raise ValueError(f"start {start} is outside the video (0..{self.num_frames - 1})")
        max_frames = op.get("max_frames")
        if max_frames is not None and int(max_frames) < 1:
            raise ValueError("max_frames must be at least 1")
        max_frames = None if max_frames is None else int(max_frames)
        frames = []
        if direction in ("forward", "both"):
            frames += self._direction(start, max_frames, reverse=False)
        if direction == "backward":
            frames += self._direction(start, max_frames, reverse=True)
        if direction == "both" and start > 0:
            frames += self._direction(start - 1, max_frames, reverse=True)
        return {"frames": frames}

    def remove(self, op: dict) -> dict:
        obj_id = int(op["obj_id"])
        removed = remove_object(self.session, obj_id)
        self.iou = {key: value for key, value in self.iou.items() if key[0] != obj_id}
        return {"removed": removed}

    def reset(self, op: dict) -> dict:
        cleared = len(self.session.obj_ids)
        self.session.reset_tracking_data()
        self.iou.clear()
        return {"cleared": cleared}

    def run(self, op: dict) -> dict:
        handlers = {"prompt": self.prompt, "propagate": self.propagate, "remove": self.remove, "reset": self.reset}
        if op.get("op") not in handlers:
            raise ValueError(f"unknown op {op.get('op')!r}")
        return handlers[op["op"]](op)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--model", help="checkpoint the bundle came from (default: <bundle>/hf)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    script = json.load(sys.stdin)

    started = time.perf_counter()
    reference = VideoReference(args.model or str(args.bundle / "hf"), args.device)
    load_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    frames = decode_video(script["video"], script.get("raw"))
    if not frames:
        raise SystemExit(f"{script['video']}: no decodable frames")
    reference.open(frames)
    decode_ms = (time.perf_counter() - started) * 1000

    results, per_op_ms, fps = [], [], []
    with torch.inference_mode():
        for op in script["ops"]:
            started = time.perf_counter()
            try:
                result = reference.run(op)
            except (ValueError, KeyError, TypeError) as error:  # a bad op: reported, the script goes on
                result = {"error": f"{type(error).__name__}: {error}"}
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            results.append(result)
            per_op_ms.append(elapsed * 1000)
            fps.append(len(result["frames"]) / elapsed if "frames" in result and elapsed > 0 else None)
    json.dump(
        {
            "video_info": {"frames": len(frames), "width": reference.width, "height": reference.height},
            "results": results,
            "timing": {"load_ms": load_ms, "decode_ms": decode_ms, "per_op_ms": per_op_ms, "frames_per_second": fps},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
