#!/usr/bin/env python3
"""The concept-tracking oracle: transformers' Sam3VideoModel (text prompts in video) on a script
of operations, as JSON. The reference side of docs/video-concepts.md.

  video_concept_reference.py --bundle <bundle dir> [--model <hf dir>] [--device cpu]
                             [--threads N] [--max-objects N] [--official-postprocess] < script.json

(--threads 1 on small CPU machines: on a loaded 2-core machine torch's default of two threads
made a det-track step of the tiny model some 30x slower than one thread.)

script.json: {"video": "<file>", ["raw": {"width", "height"},] "ops": [
    {"op": "concept", "frame": 0, "texts": ["red disc", "square"],
     "exemplars": [{"text": "square", "boxes": [[cx, cy, w, h]], "box_labels": [1]}]},
    {"op": "propagate", "direction": "forward" | "backward" | "both", "start": null, "max_frames": null,
     "hotstart_delay": null},
    {"op": "refine", "frame": 3, "obj_id": 2, "points": [[x, y]], "point_labels": [1], "box": null},
    {"op": "remove", "obj_id": 2},
    {"op": "remove_concept", "concept_id": 1},
    {"op": "reset"}]}

The model is transformers' Sam3VideoModel loaded from the bundle's hf/ copy (random bundles) or
from --model. Frames are decoded with PyAV as RGB24 (video_reference.decode_video) and
preprocessed as the server's image path does (sam3_tools.reference_pipeline.preprocess). Texts
are tokenized as the image oracle does (CLIP, 32 tokens, padded to max length and truncated) with
the bundle's vocabulary (manifest text.vocab_file) or, for a bundle holding only hf/, open_clip's.

Ids (docs/video-concepts.md "Ids"): concept id = the reference's prompt id + 1, object id = the
reference's obj id + 1; both are never reused within a session, also not after a reset.

Operations (docs/video-concepts.md "Operations"):
- concept: each text becomes a concept (the same text as a current concept is that concept),
  then one det-track step on `frame` (`model(session, frame_idx=frame, reverse=False)`, with the
  configured hotstart delay). Result: {"frame", "concepts": [{"id", "text"}, one per distinct
  text, in order], "objects": [...]}. A text that was a concept removed earlier is a new concept.
  exemplars (optional): boxes (normalized cx, cy, w, h) and labels (1 positive, 0 negative) of
  one of the op's texts on `frame`; they replace that concept's exemplars there. The detector
  takes a concept's exemplars on the frames they were given on only (patch 6).
- propagate (an error without any concept): the server's order, each direction its own run:
  forward start .. end of video; backward start, start - 1, .., 0; both = forward from start,
  then backward from start - 1;
  max_frames = frames per direction. start defaults to the first frame where a current concept
  was prompted or any object has a conditioning output (else 0). hotstart_delay d (default: the
  config's) is set as `model.hotstart_delay` for the op (restored after) and drives the output
  buffer of each run exactly as `propagate_in_video_iterator` does it (M1822-1843), with the
  run's own end frame: d > 0: buffered; when the buffer holds d frames its oldest is emitted;
  the run's last frame flushes it; d = 0: every frame at once. Each frame is post-processed when
  it is emitted (hotstart removals known by then are hidden). Result: {"frames": [{"frame",
  "objects"}, ...]} in emission order.
- refine: the clicks (normalized x, y; labels 1 / 0) and optional box (normalized cx, cy, w, h;
  two points labelled 2, 3 before the clicks, as Sam3TrackerVideoProcessor adds a box) in pixels
  of the R x R model input replace the object's point inputs on that frame, its mask input there
  (the detector's, on the frame it was found) is dropped; the frame's vision features are put in
  the session cache as `_det_track_one_frame` computes them; then the tracker's
  forward(frame, reverse=False, run_mem_encoder=True) over all objects; the object's score and
  its tracker score on that frame become 1.0 (as the official add_tracker_new_points). Result
  {"frame", "objects"}: every object's tracker mask on that frame, post-processed, with
  obj_id_to_score = the session's scores and as tracker scores 1.0 for the refined object and the
  sigmoid of this forward's object score logit for the others (official SAM3 uses the scores
  stored for that frame, and 0.0 where none is stored, which makes such an object lose every
  contested pixel); hidden: the frame's suppressed ids and the hotstart-
  removed ids. No hole filling (official SAM3 fills holes of the refined mask at video size).
- remove: Sam3VideoInferenceSession.remove_object. Result: {"removed": bool}.
- remove_concept: every object of the concept is removed as by remove, and the prompt is dropped
  from session.prompts / prompt_input_ids / prompt_attention_masks / prompt_embeddings, so
  run_detection (which iterates session.prompts) no longer detects it; other concepts keep their
  prompt ids. Result: {"removed_objects": [ids]}.
- reset: session.reset_state(), keeping max_obj_id (reset_state sets it to 0, so the next new
  id would be 1) and the concept-id counter: ids go on; hotstart_removed_obj_ids (which
  reset_state keeps) and the tracker's obj_with_new_inputs are cleared too. Result: {"cleared":
  number of objects}.
An op that cannot run (unknown op, frame outside the video, unknown object or concept, nothing to
propagate) gives {"error": "<message>"} and the script goes on.

Each object (postprocess_outputs, P247, run when the frame is emitted): {"id", "concept_id",
"score" (obj_id_to_score: the detection score, 1.0 once refined), "tracker_score" (the frame's
tracker score; 0.0 where none, as postprocess_outputs), "box" ([cx, cy, w, h] normalized bounds
of the final mask; zeros when empty), "mask": {"size": [H, W], "counts": COCO RLE}}, in id order.
postprocess_outputs: low-res masks bilinear to the video size, > 0; empty masks dropped;
suppressed and hotstart-removed ids hidden; within each concept each pixel kept by the highest
tracker score (ties: the lower id). The processor is built without its image processor; its
torchvision masks_to_boxes is replaced by a pure-torch one (and its boxes are not used).

Patches to transformers 5.17, applied to this process's model only:
1. Misalignment of build_outputs and the tracker-score update (docs/video-concepts.md
   "Differences"): both zip `session.obj_ids` *after* the execution phase (new objects
   appended, hotstart-removed ones dropped) with the masks / object scores computed for the ids
   *before* it (M1519, M1679), so when hotstart removes an object that is not the last, the
   objects after it get their neighbours' masks and scores. Patched: the ids are snapshotted at
   the start of run_tracker_update_planning_phase, and build_outputs sets `session.obj_ids` to
   the snapshot (left so for the tracker-score update that follows; forward() then overwrites
   `session.obj_ids` from the metadata, checked after every step). The removed object keeps its
   own mask in the output; it is hidden as hotstart-removed. As official SAM3 (ids before).
2. Text-only detection runs the geometry encoder on one padding box (label -10), as the
   official model and the bundle's detector do (docs/bundle-format.md); transformers'
   run_detection passes no box and so skips it (no CLS token).
3. New concept ids: session.add_prompt gives `len(session.prompts)`, which collides with a
   current prompt after a concept is removed; here ids come from a counter (dedupe by text among
   the current prompts, as add_prompt).
4. Hotstart-removed ids are added to `session.hotstart_removed_obj_ids` after every op that
   runs the model (concept, each propagate frame, refine), not only inside transformers'
   iterator with a delay > 0.
5. Post-processing kernels: transformers' optional `kernels` (mask NMS, hole filling, sprinkle
   removal) are off (`cv_utils_kernel = False`: the three steps are skipped) unless
   --official-postprocess, which installs the pure-Python twins of
   sam3_tools/mask_postprocess.py (`TwinKernels`: generic_nms, cc_2d) as
   `modeling_sam3_video.cv_utils_kernel`.
6. Exemplar boxes with a text (official SAM3's per-frame geometric prompt; transformers'
   video model takes text only): run_detection's detector call for a concept on a frame where
   it has exemplars passes them as input_boxes / input_boxes_labels (the image detector's box
   prompt, ROI-aligned by sam3_tools.roi_align) instead of the padding box of patch 2.

Prints {"video_info": {"frames", "width", "height"}, "results": [one per op],
        "timing": {"load_ms", "decode_ms", "per_op_ms": [...], "frames_per_second": [per op; null
        unless a propagation], "per_frame_ms": [per op: ms of each det-track step, or null]},
        "peak_rss_mb"}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sam3_tools.patches import install_roi_align  # noqa: E402
from sam3_tools.reference_pipeline import PADDING_LABEL, encode_rle, mask_box, preprocess  # noqa: E402
from sam3_tools.vocab import open_clip_vocab  # noqa: E402
from tokenizer_reference import build_tokenizer  # noqa: E402
from video_reference import decode_video, prompt_pixels  # noqa: E402

TEXT_TOKENS = 32


def modeling_module():
    return importlib.import_module("transformers.models.sam3_video.modeling_sam3_video")


def processing_module():
    # Imported as a module (the lazy transformers namespace hands out a torchvision-requiring dummy).
    return importlib.import_module("transformers.models.sam3_video.processing_sam3_video")


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.masks_to_boxes in pure torch: [N, H, W] -> [N, 4] xyxy (inclusive max)."""
    if masks.numel() == 0:
        return torch.zeros((0, 4), device=masks.device, dtype=torch.float)
    n, height, width = masks.shape
    boxes = torch.zeros((n, 4), device=masks.device, dtype=torch.float)
    for index, mask in enumerate(masks):
        ys, xs = torch.where(mask != 0)
        if xs.numel() == 0:
            continue
        boxes[index] = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
    return boxes


def make_processor():
    """Sam3VideoProcessor without its image / video processors and tokenizer: only
    postprocess_outputs is used."""
    processing = processing_module()
    processing.masks_to_boxes = masks_to_boxes
    return object.__new__(processing.Sam3VideoProcessor)


def install_postprocess_kernels(official: bool):
    """Plugs the mask NMS / connected-components kernels transformers looks for: off (False:
    skipped) or, with `official`, the pure-Python twins of sam3_tools.mask_postprocess."""
    modeling = modeling_module()
    if not official:
        modeling.cv_utils_kernel = False
        return None
    from sam3_tools.mask_postprocess import TwinKernels

    kernels = TwinKernels()
    modeling.cv_utils_kernel = kernels  # the recipe of mask_postprocess's docstring
    return kernels


def tokenizer_for(bundle: Path):
    manifest_path = bundle / "manifest.json"
    vocab = None
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        vocab_file = manifest.get("text", {}).get("vocab_file")
        if vocab_file and (bundle / vocab_file).is_file():
            vocab = bundle / vocab_file
    if vocab is None:
        vocab = open_clip_vocab()
    if vocab is None:
        raise SystemExit("no CLIP vocabulary: the bundle has none and open_clip is not installed")
    with tempfile.TemporaryDirectory() as directory:
        return build_tokenizer(str(vocab), directory)


class ConceptVideoReference:
    def __init__(self, source: str, device: str, tokenizer, official_postprocess: bool = False):
        from transformers import Sam3VideoModel

        install_roi_align()
        self.device = device
        self.tokenizer = tokenizer
        self.model = Sam3VideoModel.from_pretrained(source).eval().to(device)
        self.kernels = install_postprocess_kernels(official_postprocess)
        self.processor = make_processor()
        self.resolution = int(self.model.tracker_model.config.image_size)
        self.default_hotstart_delay = int(self.model.hotstart_delay)
        self.session = None
        self.height = self.width = 0
        self.next_prompt_id = 0
        self.concept_frames: dict[int, set[int]] = {}  # prompt id -> frames it was prompted on
        self.step_ms: list[float] = []  # ms of each det-track step of the current op
        # (frame, det-track steps run so far in its propagation run) of each emitted frame of
        # the last propagate op: when each output left the hotstart buffer.
        self.emissions: list[tuple[int, int]] = []
        self._obj_ids_before: list[int] | None = None
        # (prompt id, frame) -> (boxes, labels); patch 6
        self.exemplars: dict[tuple[int, int], tuple[list[list[float]], list[int]]] = {}
        self._frame = -1  # the frame of the det-track step running
        self._detect_order: list[int] = []  # prompt ids of the run_detection call running
        self._patch_model()

    # -- patches -----------------------------------------------------------------------------

    def _patch_model(self) -> None:
        model = self.model
        planning = model.run_tracker_update_planning_phase
        build = model.build_outputs
        forward = model.forward
        detector_forward = model.detector_model.forward
        run_detection = model.run_detection

        def planning_with_snapshot(*args, **kwargs):
            self._obj_ids_before = list(kwargs["inference_session"].obj_ids)
            return planning(*args, **kwargs)

        def build_with_snapshot(*args, **kwargs):
            # Patch 1: masks (and, after this, tracker scores) zipped with the ids before the
            # update. forward() overwrites session.obj_ids from the metadata right after.
            kwargs["inference_session"].obj_ids = list(self._obj_ids_before)
            return build(*args, **kwargs)

        def checked_forward(*args, **kwargs):
            started = time.perf_counter()
            out = forward(*args, **kwargs)
            self.step_ms.append((time.perf_counter() - started) * 1000)
            session = kwargs["inference_session"]
            by_index = [session.obj_idx_to_id(i) for i in range(len(session.obj_ids))]
            if session.obj_ids != by_index or len(session._obj_id_to_idx) != len(session.obj_ids):
                raise RuntimeError(f"session ids out of step: {session.obj_ids} vs {by_index}")
            return out

        def detection_in_order(*args, **kwargs):
            # run_detection calls the detector once per prompt, in session.prompts order.
            self._detect_order = list(kwargs["inference_session"].prompts.keys())
            try:
                return run_detection(*args, **kwargs)
            finally:
                self._detect_order = []

        def detector_with_padding_box(*args, **kwargs):
            prompt_id = self._detect_order.pop(0) if self._detect_order else None
            exemplars = self.exemplars.get((prompt_id, self._frame))
            if exemplars is not None and kwargs.get("input_boxes") is None:
                # Patch 6: the concept's exemplar boxes on this frame.
                device = kwargs["vision_embeds"].fpn_hidden_states[0].device
                boxes, labels = exemplars
                kwargs["input_boxes"] = torch.tensor([boxes], dtype=torch.float32, device=device)
                kwargs["input_boxes_labels"] = torch.tensor([labels], dtype=torch.long, device=device)
            # Patch 2: text-only prompts pass one padding box (the geometry encoder always runs).
            if kwargs.get("input_boxes") is None and kwargs.get("vision_embeds") is not None:
                batch = kwargs["vision_embeds"].fpn_hidden_states[0].shape[0]
                device = kwargs["vision_embeds"].fpn_hidden_states[0].device
                kwargs["input_boxes"] = torch.zeros(batch, 1, 4, device=device)
                kwargs["input_boxes_labels"] = torch.full((batch, 1), PADDING_LABEL, dtype=torch.long, device=device)
            return detector_forward(*args, **kwargs)

        model.run_tracker_update_planning_phase = planning_with_snapshot
        model.build_outputs = build_with_snapshot
        model.forward = checked_forward
        model.detector_model.forward = detector_with_padding_box
        model.run_detection = detection_in_order

    # -- session -----------------------------------------------------------------------------

    def open(self, frames: list[np.ndarray]) -> None:
        session_class = modeling_module().Sam3VideoInferenceSession
        self.height, self.width = frames[0].shape[:2]
        video = torch.cat([preprocess(rgb, self.resolution) for rgb in frames])
        self.session = session_class(
            video=video,
            video_height=self.height,
            video_width=self.width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=torch.float32,
        )
        self.concept_frames.clear()
        self.next_prompt_id = 0

    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    def _check_frame(self, frame, what: str = "frame") -> int:
        frame = int(frame)
        if not 0 <= frame < self.num_frames:
            raise ValueError(f"{what} {frame} is outside the video (0..{self.num_frames - 1})")
        return frame

    def _add_prompt(self, text: str) -> int:
        """session.add_prompt with ids that are never reused (patch 3)."""
        session = self.session
        for prompt_id, existing in session.prompts.items():
            if existing == text:
                return prompt_id
        prompt_id = self.next_prompt_id
        self.next_prompt_id += 1
        session.prompts[prompt_id] = text
        tokens = self.tokenizer(
            [text], padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt"
        )
        session.prompt_input_ids[prompt_id] = tokens["input_ids"].to(self.device)
        session.prompt_attention_masks[prompt_id] = tokens["attention_mask"].to(self.device)
        return prompt_id

    def _step(self, frame: int, reverse: bool):
        self._frame = frame
        out = self.model(inference_session=self.session, frame_idx=frame, reverse=reverse)
        self.session.hotstart_removed_obj_ids.update(out.removed_obj_ids)  # patch 4
        return out

    # -- output ------------------------------------------------------------------------------

    def objects(self, out) -> list[dict]:
        session = self.session
        processed = self.processor.postprocess_outputs(session, out)
        ids = processed["object_ids"].tolist()
        masks = processed["masks"].cpu().numpy()
        tracker_scores = out["obj_id_to_tracker_score"]
        results = []
        for ref_id, mask in zip(ids, masks):
            results.append({
                "id": int(ref_id) + 1,
                "concept_id": int(session.obj_id_to_prompt_id[ref_id]) + 1,
                "score": float(out["obj_id_to_score"][ref_id]),
                "tracker_score": float(tracker_scores.get(ref_id, 0.0)),
                "box": mask_box(mask),
                "mask": encode_rle(mask),
            })
        return results

    # -- operations --------------------------------------------------------------------------

    def concept(self, op: dict) -> dict:
        frame = self._check_frame(op["frame"])
        texts = op.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty strings")
        exemplars = {}
        for entry in op.get("exemplars") or []:
            boxes = [[float(v) for v in box] for box in entry["boxes"]]
            labels = [int(label) for label in entry["box_labels"]]
            if entry["text"] not in texts or len(boxes) != len(labels) or not boxes:
                raise ValueError("exemplars: boxes with one label each, for one of the op's texts")
            if any(len(box) != 4 or not all(0 <= v <= 1 for v in box) for box in boxes):
                raise ValueError("exemplars: boxes are normalized [cx, cy, w, h]")
            exemplars[entry["text"]] = (boxes, labels)
        concepts = []
        for text in texts:
            prompt_id = self._add_prompt(text)
            if all(c["id"] != prompt_id + 1 for c in concepts):
                concepts.append({"id": prompt_id + 1, "text": text})
            self.concept_frames.setdefault(prompt_id, set()).add(frame)
            if text in exemplars:
                self.exemplars[(prompt_id, frame)] = exemplars[text]
        self.model.hotstart_delay = self.default_hotstart_delay
        out = self._step(frame, reverse=False)
        return {"frame": frame, "concepts": concepts, "objects": self.objects(out)}

    def _run(self, order: list[int], reverse: bool, delay: int) -> list[dict]:
        """One propagation run: the frames of `order`, outputs held back as
        propagate_in_video_iterator holds them, with the run's own end frame."""
        emitted, buffer = [], []
        end = order[-1]
        for computed, frame in enumerate(order, start=1):
            out = self._step(frame, reverse)
            if delay > 0:
                buffer.append(out)
                if frame == end:
                    ready, buffer = buffer, []
                elif len(buffer) >= delay:
                    ready, buffer = buffer[:1], buffer[1:]
                else:
                    ready = []
            else:
                ready = [out]
            for item in ready:  # post-processed when emitted
                emitted.append({"frame": int(item.frame_idx), "objects": self.objects(item)})
                self.emissions.append((int(item.frame_idx), computed))
        return emitted

    def default_start(self) -> int:
        frames = [f for fs in self.concept_frames.values() for f in fs]
        frames += [f for out in self.session.output_dict_per_obj.values() for f in out["cond_frame_outputs"]]
        return min(frames) if frames else 0

    def propagate(self, op: dict) -> dict:
        direction = op.get("direction", "forward")
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"unknown direction {direction!r}")
        if not self.session.prompts:
            raise ValueError("nothing to propagate: no concepts")
        start = op.get("start")
        start = self.default_start() if start is None else self._check_frame(start, "start")
        max_frames = op.get("max_frames")
        if max_frames is not None and int(max_frames) < 1:
            raise ValueError("max_frames must be at least 1")
        delay = op.get("hotstart_delay")
        delay = self.default_hotstart_delay if delay is None else int(delay)
        if delay < 0:
            raise ValueError("hotstart_delay must be at least 0")
        count = self.num_frames if max_frames is None else int(max_frames)
        runs = []
        if direction in ("forward", "both"):
            runs.append((list(range(start, min(start + count, self.num_frames))), False))
        if direction == "backward":
            runs.append((list(range(start, max(start - count, -1), -1)), True))
        if direction == "both" and start > 0:
            runs.append((list(range(start - 1, max(start - 1 - count, -1), -1)), True))
        frames = []
        self.emissions = []
        self.model.hotstart_delay = delay
        try:
            for order, reverse in runs:
                frames += self._run(order, reverse, delay)
        finally:
            self.model.hotstart_delay = self.default_hotstart_delay
        return {"frames": frames}

    def _ensure_vision_features(self, frame: int) -> None:
        """The frame's tracker features in the session cache, computed as _det_track_one_frame does."""
        session = self.session
        if session.cache.get_vision_features(frame) is not None:
            return
        pixel_values = session.get_frame(frame).unsqueeze(0)
        vision_embeds = self.model.detector_model.get_vision_features(pixel_values=pixel_values)
        vision_feats, vision_pos_embeds = self.model.get_vision_features_for_tracker(vision_embeds=vision_embeds)
        features = {"vision_feats": vision_feats, "vision_pos_embeds": vision_pos_embeds}
        session.cache.cache_vision_features(frame, features)

    def refine(self, op: dict) -> dict:
        session = self.session
        frame = self._check_frame(op["frame"])
        obj_id = int(op["obj_id"]) - 1
        if obj_id not in session._obj_id_to_idx:
            raise ValueError(f"no object {obj_id + 1}")
        points, labels = prompt_pixels(op, self.resolution)
        if not points:
            raise ValueError("a refinement needs points or a box")
        started = time.perf_counter()
        self._ensure_vision_features(frame)
        obj_idx = session.obj_id_to_idx(obj_id)
        session.point_inputs_per_obj[obj_idx][frame] = {
            "point_coords": torch.tensor([[points]], dtype=torch.float32, device=self.device),
            "point_labels": torch.tensor([[labels]], dtype=torch.int32, device=self.device),
        }
        session.remove_mask_inputs(obj_idx, frame)
        session.obj_with_new_inputs = [obj_id]
        out = self.model.tracker_model(inference_session=session, frame_idx=frame, reverse=False, run_mem_encoder=True)
        session.obj_id_to_score[obj_id] = 1.0
        frame_scores = session.obj_id_to_tracker_score_frame_wise.setdefault(frame, {})
        frame_scores[obj_id] = 1.0
        logits = out.object_score_logits.reshape(-1)
        ids = list(out.object_ids)
        tracker_scores = {
            oid: 1.0 if oid == obj_id else float(torch.sigmoid(logits[i])) for i, oid in enumerate(ids)
        }
        output = modeling_module().Sam3VideoSegmentationOutput(
            object_ids=ids,
            obj_id_to_mask={oid: out.pred_masks[i] for i, oid in enumerate(ids)},  # (1, 4G, 4G)
            obj_id_to_score=session.obj_id_to_score,
            obj_id_to_tracker_score=tracker_scores,
            removed_obj_ids=set(session.removed_obj_ids),
            suppressed_obj_ids=set(session.suppressed_obj_ids.get(frame, set())),
            frame_idx=frame,
        )
        session.hotstart_removed_obj_ids.update(output.removed_obj_ids)  # patch 4
        self.step_ms.append((time.perf_counter() - started) * 1000)
        return {"frame": frame, "objects": self.objects(output)}

    def remove(self, op: dict) -> dict:
        obj_id = int(op["obj_id"]) - 1
        existed = obj_id in self.session._obj_id_to_idx
        self.session.remove_object(obj_id)
        return {"removed": existed}

    def remove_concept(self, op: dict) -> dict:
        session = self.session
        prompt_id = int(op["concept_id"]) - 1
        if prompt_id not in session.prompts:
            raise ValueError(f"no concept {prompt_id + 1}")
        members = [oid for oid in list(session.obj_ids) if session.obj_id_to_prompt_id.get(oid) == prompt_id]
        for oid in members:
            session.remove_object(oid)
        tables = (session.prompts, session.prompt_input_ids, session.prompt_attention_masks, session.prompt_embeddings)
        for table in tables:
            table.pop(prompt_id, None)
        self.concept_frames.pop(prompt_id, None)
        self.exemplars = {key: value for key, value in self.exemplars.items() if key[0] != prompt_id}
        return {"removed_objects": sorted(oid + 1 for oid in members)}

    def reset(self, op: dict) -> dict:
        session = self.session
        cleared = len(session.obj_ids)
        max_obj_id = session.max_obj_id
        session.reset_state()  # sets max_obj_id = 0 and keeps hotstart_removed_obj_ids
        session.max_obj_id = max_obj_id
        session.hotstart_removed_obj_ids = set()
        session.obj_with_new_inputs = []
        self.concept_frames.clear()
        self.exemplars.clear()
        return {"cleared": cleared}

    def run(self, op: dict) -> dict:
        handlers = {
            "concept": self.concept,
            "propagate": self.propagate,
            "refine": self.refine,
            "remove": self.remove,
            "remove_concept": self.remove_concept,
            "reset": self.reset,
        }
        if op.get("op") not in handlers:
            raise ValueError(f"unknown op {op.get('op')!r}")
        return handlers[op["op"]](op)

    def execute(self, op: dict) -> dict:
        """run(), with an op that cannot run reported as {"error"} (the script goes on)."""
        try:
            return self.run(op)
        except (ValueError, KeyError, TypeError) as error:
            return {"error": f"{type(error).__name__}: {error}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--model", help="checkpoint the bundle came from (default: <bundle>/hf)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument(
        "--official-postprocess", action="store_true",
        help="mask NMS, hole filling and sprinkle removal with the twins of sam3_tools/mask_postprocess.py",
    )
    parser.add_argument(
        "--max-objects", type=int, default=0,
        help="the model's max_num_objects (0: the checkpoint's), as the server's VIDEO_MAX_OBJECTS",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    script = json.load(sys.stdin)

    started = time.perf_counter()
    reference = ConceptVideoReference(
        args.model or str(args.bundle / "hf"), args.device, tokenizer_for(args.bundle), args.official_postprocess
    )
    if args.max_objects > 0:
        reference.model.max_num_objects = min(reference.model.max_num_objects, args.max_objects)
    load_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    frames = decode_video(script["video"], script.get("raw"))
    if not frames:
        raise SystemExit(f"{script['video']}: no decodable frames")
    reference.open(frames)
    decode_ms = (time.perf_counter() - started) * 1000

    results, per_op_ms, fps, per_frame_ms = [], [], [], []
    with torch.inference_mode():
        for op in script["ops"]:
            reference.step_ms = []
            started = time.perf_counter()
            result = reference.execute(op)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            results.append(result)
            per_op_ms.append(elapsed * 1000)
            fps.append(len(result["frames"]) / elapsed if "frames" in result and elapsed > 0 else None)
            per_frame_ms.append(list(reference.step_ms) if reference.step_ms else None)
    json.dump(
        {
            "video_info": {"frames": len(frames), "width": reference.width, "height": reference.height},
            "results": results,
            "timing": {
                "load_ms": load_ms, "decode_ms": decode_ms, "per_op_ms": per_op_ms,
                "frames_per_second": fps, "per_frame_ms": per_frame_ms,
            },
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
