"""TypedDicts of the API's requests and responses (src/server/schemas.ts, SPEC.md).

Responses are the server's JSON as parsed, not copies: a TypedDict only names the fields.
Fields the schema marks optional are in a ``total=False`` base class (Python 3.10 has no
``NotRequired``). Coordinates are normalized to [0, 1]: boxes ``[cx, cy, w, h]``, points
``[x, y]``.
"""

from __future__ import annotations

from typing import Literal, TypedDict, Union

__all__ = [
    "BoxPrompt",
    "CachedFeaturesResponse",
    "CachedFeaturesResult",
    "CloseSessionResponse",
    "CompleteMessage",
    "ConceptInfo",
    "DeviceStatus",
    "Direction",
    "ErrorDetail",
    "ErrorMessage",
    "ErrorResponse",
    "FrameMessage",
    "FrameResult",
    "GpuId",
    "HealthResponse",
    "ImageSize",
    "ModelInfo",
    "PointPrompt",
    "Prompt",
    "PropagateResponse",
    "RemoveConceptResponse",
    "RemoveObjectResponse",
    "ResetSessionResponse",
    "Resolution",
    "RleMask",
    "SegmentResponse",
    "ServerInfo",
    "SessionConcept",
    "SessionStatusResponse",
    "SessionSummary",
    "ServingStatus",
    "SessionsListResponse",
    "StartSessionResponse",
    "TextPrompt",
    "TrackedObject",
    "VideoInfo",
    "VideoPromptResponse",
]

ServingStatus = Literal["ok", "loading", "degraded"]
Direction = Literal["forward", "backward", "both"]
#: A GPU index of VIDEO_GPU_LIST, or "cpu" on a server whose video devices are the CPU.
GpuId = Union[int, Literal["cpu"]]


# --- prompts -----------------------------------------------------------------------------


class TextPrompt(TypedDict):
    """A concept named by text; every instance of it is returned."""

    type: Literal["text"]
    text: str


class _BoxPromptBase(TypedDict):
    type: Literal["box"]
    box: list[float]


class BoxPrompt(_BoxPromptBase, total=False):
    """A box ``[cx, cy, w, h]``: an exemplar of a concept, or a clicked object's region."""

    label: bool


class PointPrompt(TypedDict):
    """Clicks ``[x, y]`` on one object; labels 1 (foreground) or 0 (background)."""

    type: Literal["point"]
    points: list[list[float]]
    point_labels: list[int]


Prompt = Union[TextPrompt, BoxPrompt, PointPrompt]


# --- masks and info ----------------------------------------------------------------------


class RleMask(TypedDict):
    """COCO RLE as pycocotools ``mask.encode`` makes it (column-major), counts as a str."""

    size: list[int]
    counts: str


class ModelInfo(TypedDict):
    id: str
    checksum: str
    random_weights: bool
    bundle_format_version: int
    resolution: int
    dtype: str


class _ServerInfoBase(TypedDict):
    name: str
    version: str
    status: ServingStatus
    model: ModelInfo | None
    random_weights: bool
    docs: str
    openapi: str


class ServerInfo(_ServerInfoBase, total=False):
    """GET /."""

    warning: str


class DeviceStatus(TypedDict):
    device: str
    role: Literal["image", "video"]
    status: Literal["loading", "ready", "failed", "disabled", "unavailable", "stopping"]


class _HealthResponseBase(TypedDict):
    status: ServingStatus
    model: ModelInfo | None
    devices: list[DeviceStatus]
    sessions: int
    random_weights: bool


class HealthResponse(_HealthResponseBase, total=False):
    """GET /health (200 when "ok", 503 when "loading" or "degraded")."""

    warning: str


# --- images ------------------------------------------------------------------------------


class ImageSize(TypedDict):
    width: int
    height: int


class SegmentResponse(TypedDict):
    """POST /api/v1/image/segment."""

    masks: list[RleMask]
    boxes: list[list[float]]
    scores: list[float]
    labels: list[str]
    num_masks: int
    image_size: ImageSize
    visualization_url: str | None
    inference_time_ms: float


class CachedFeaturesResult(TypedDict):
    prompt: str
    masks: list[RleMask]
    boxes: list[list[float]]
    scores: list[float]
    num_masks: int


class CachedFeaturesResponse(TypedDict):
    """POST /api/v1/image/cached-features."""

    results: list[CachedFeaturesResult]
    cache_hit: bool
    inference_time_ms: float


# --- video sessions ----------------------------------------------------------------------


class Resolution(TypedDict):
    width: int
    height: int


class VideoInfo(TypedDict):
    total_frames: int
    fps: float
    resolution: Resolution
    duration_seconds: float


class StartSessionResponse(TypedDict):
    """POST /api/v1/video/session/start."""

    session_id: str
    video_info: VideoInfo
    status: Literal["ready"]


class ConceptInfo(TypedDict):
    concept_id: int
    text: str


class _VideoPromptResponseBase(TypedDict):
    frame_index: int
    obj_id: list[int]
    masks: list[RleMask]
    boxes: list[list[float]]
    scores: list[float]
    present: list[bool]
    status: Literal["prompt_added"]


class VideoPromptResponse(_VideoPromptResponseBase, total=False):
    """POST .../prompt: every object of the session on the prompted frame (aligned arrays)."""

    concepts: list[ConceptInfo]
    concept_ids: list[int]
    tracker_scores: list[float]
    objects_dropped: int


class _TrackedObjectBase(TypedDict):
    id: int
    mask: RleMask
    box: list[float]
    score: float
    present: bool


class TrackedObject(_TrackedObjectBase, total=False):
    """One object on one frame."""

    concept_id: int
    tracker_score: float


class _FrameResultBase(TypedDict):
    frame_index: int
    objects: list[TrackedObject]


class FrameResult(_FrameResultBase, total=False):
    """One frame of a propagation."""

    objects_dropped: int


class PropagateResponse(TypedDict):
    """POST .../propagate: results by frame index (a decimal string)."""

    session_id: str
    results: dict[str, FrameResult]
    total_frames: int
    processing_time_ms: float


class _FrameMessageBase(TypedDict):
    type: Literal["frame"]
    frame_index: int
    objects: list[TrackedObject]


class FrameMessage(_FrameMessageBase, total=False):
    """One frame of a propagation stream, in processing order."""

    objects_dropped: int


class CompleteMessage(TypedDict):
    type: Literal["complete"]
    total_frames: int


class ErrorDetail(TypedDict):
    code: str
    message: str


class ErrorResponse(TypedDict):
    """The body of every error answer."""

    error: ErrorDetail


class ErrorMessage(TypedDict):
    type: Literal["error"]
    error: ErrorDetail


class SessionConcept(TypedDict):
    concept_id: int
    text: str
    object_ids: list[int]


class SessionStatusResponse(TypedDict):
    """GET .../status."""

    session_id: str
    status: Literal["ready", "propagating"]
    current_objects: list[int]
    concepts: list[SessionConcept]
    frames_processed: int
    total_frames: int
    gpu_memory_used_mb: float


class RemoveObjectResponse(TypedDict):
    session_id: str
    obj_id: int
    status: Literal["removed"]


class RemoveConceptResponse(TypedDict):
    session_id: str
    concept_id: int
    removed_objects: list[int]
    status: Literal["removed"]


class ResetSessionResponse(TypedDict):
    session_id: str
    status: Literal["reset"]
    objects_cleared: int


class CloseSessionResponse(TypedDict):
    session_id: str
    status: Literal["closed"]
    memory_freed_mb: float


class SessionSummary(TypedDict):
    session_id: str
    type: Literal["video"]
    created_at: str
    status: Literal["ready", "propagating"]
    objects_count: int


class SessionsListResponse(TypedDict):
    """GET /api/v1/video/sessions."""

    sessions: list[SessionSummary]
    total_sessions: int
