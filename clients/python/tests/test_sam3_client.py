"""sam3_client against the real server (node dist/src/main.js, tiny random-weight bundle).

Random weights give meaningless but deterministic masks: the tests compare the client's
results with what the server's own HTTP API answers to the same raw request, and decode every
mask with pycocotools and with the client's decoder.
"""

from __future__ import annotations

import base64
import http.server
import json
import pickle
import re
import shutil
import signal
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from client_test_support import (
    DEGRADED_RATE_LIMIT,
    LONG_CLIP_FRAMES,
    REPO,
    ServerProcess,
    free_port,
    png_bytes,
    start_server,
)
from sam3_client import (
    PropagationStream,
    Sam3Client,
    Sam3Error,
    box_prompt,
    decode_mask,
    decode_mask_numpy,
    point_prompt,
    text_prompt,
)
from sam3_client import types as api_types
from sam3_client.types import RleMask

# pycocotools' Masks.__array__ predates numpy 2's copy keyword (its own warning, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
WIDTH, HEIGHT = 64, 48
CLIP_INFO = {
    "total_frames": 6,
    "fps": 10,
    "resolution": {"width": 64, "height": 48},
    "duration_seconds": 0.6,
}


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Sam3Client]:
    with Sam3Client(server.url) as sam3:
        yield sam3
    server.check_alive()


@pytest.fixture(scope="module")
def image() -> bytes:
    return png_bytes(WIDTH, HEIGHT, seed=1)


def raw_post(server: ServerProcess, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60.0)


def without_timing(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("inference_time_ms", "processing_time_ms")}


def check_masks(masks: Iterable[RleMask], height: int, width: int) -> None:
    """Both decoders give pycocotools' array, which encodes back to the server's counts."""
    for rle in masks:
        assert rle["size"] == [height, width]
        reference = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        for decoded in (decode_mask(rle), decode_mask_numpy(rle)):
            assert decoded.shape == (height, width)
            assert decoded.dtype == np.uint8
            np.testing.assert_array_equal(decoded, reference)
        again = mask_utils.encode(np.asfortranarray(decode_mask_numpy(rle)))
        assert again["counts"].decode() == rle["counts"]


def frame_body(message: dict[str, Any]) -> dict[str, Any]:
    """A stream frame message as a propagate response's result (without "type")."""
    assert message["type"] == "frame"
    return {k: v for k, v in message.items() if k != "type"}


def wait_ready(sam3: Sam3Client, session_id: str, timeout: float = 15.0) -> float:
    """Polls the session until it is not propagating; the seconds that took."""
    started = time.monotonic()
    while sam3.session_status(session_id)["status"] != "ready":
        assert time.monotonic() - started < timeout, "the session stayed busy"
        time.sleep(0.02)
    return time.monotonic() - started


def video_devices(sam3: Sam3Client) -> list[Any]:
    """gpu_ids naming the server's video devices ("cpu" or GPU indices)."""
    devices = [d["device"] for d in sam3.health()["devices"] if d["role"] == "video"]
    return ["cpu" if d == "cpu" else int(d.split(":")[1]) for d in devices]


# --- info ------------------------------------------------------------------------------------


def test_info_health_openapi(client: Sam3Client, server: ServerProcess) -> None:
    package = json.loads((REPO / "package.json").read_text())
    info = client.info()
    assert info == httpx.get(f"{server.url}/").json()
    assert info["name"] == package["name"]
    assert info["version"] == package["version"]
    assert (info["status"], info["docs"], info["openapi"]) == ("ok", "/docs", "/openapi.json")
    assert info["random_weights"] is True and isinstance(info["warning"], str)

    health = client.health()
    assert health["status"] == "ok"
    assert health["model"] == info["model"]
    assert {d["role"] for d in health["devices"]} == {"image", "video"}
    assert all(d["status"] == "ready" for d in health["devices"])
    assert isinstance(health["sessions"], int)

    document = client.openapi()
    assert document["openapi"].startswith("3.1")
    # Every operation of the API has its method here (GET /docs is the human page).
    methods = {
        ("get", "/"): "info",
        ("get", "/health"): "health",
        ("get", "/openapi.json"): "openapi",
        ("post", "/api/v1/image/segment"): "segment",
        ("post", "/api/v1/image/cached-features"): "cached_features",
        ("get", "/api/v1/visualizations/{name}"): "visualization",
        ("post", "/api/v1/video/session/start"): "start_session",
        ("get", "/api/v1/video/sessions"): "list_sessions",
        ("post", "/api/v1/video/session/{session_id}/prompt"): "add_prompt",
        ("post", "/api/v1/video/session/{session_id}/propagate"): "propagate",
        ("get", "/ws/propagate/{session_id}"): "propagate_stream",
        ("get", "/api/v1/video/session/{session_id}/status"): "session_status",
        ("delete", "/api/v1/video/session/{session_id}/object/{obj_id}"): "remove_object",
        ("delete", "/api/v1/video/session/{session_id}/concept/{concept_id}"): "remove_concept",
        ("post", "/api/v1/video/session/{session_id}/reset"): "reset_session",
        ("delete", "/api/v1/video/session/{session_id}"): "close_session",
    }
    operations = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete") and path != "/docs"
    }
    assert operations == set(methods)
    assert all(callable(getattr(client, name)) for name in methods.values())


def _check_typed_dict(typed: Any, schema: dict[str, Any], where: str) -> int:
    """The TypedDict's keys are the schema's properties, required as there; nested ones too."""
    assert schema.get("type") in ("object", ["object", "null"]), where
    required = set(schema.get("required", []))
    assert set(typed.__required_keys__) == required, where
    assert set(typed.__required_keys__) | set(typed.__optional_keys__) == set(
        schema["properties"]
    ), where
    checked = 1
    for name, hint in typing.get_type_hints(typed).items():
        target, sub = hint, schema["properties"][name]
        while True:
            origin, args = typing.get_origin(target), typing.get_args(target)
            if origin is list:
                target, sub = args[0], sub["items"]
            elif origin is dict:
                target, sub = args[1], sub["additionalProperties"]
            elif origin is typing.Union and type(None) in args:
                [target] = [a for a in args if a is not type(None)]
            else:
                break
        if typing.is_typeddict(target):
            checked += _check_typed_dict(target, sub, f"{where}.{name}")
    return checked


def test_types_mirror_the_schemas(client: Sam3Client) -> None:
    schemas = client.openapi()["components"]["schemas"]
    pairs = {
        "ServerInfo": api_types.ServerInfo,
        "Health": api_types.HealthResponse,
        "SegmentResponse": api_types.SegmentResponse,
        "CachedFeaturesResponse": api_types.CachedFeaturesResponse,
        "TextPrompt": api_types.TextPrompt,
        "BoxPrompt": api_types.BoxPrompt,
        "PointPrompt": api_types.PointPrompt,
        "StartSessionResponse": api_types.StartSessionResponse,
        "VideoPromptResponse": api_types.VideoPromptResponse,
        "PropagateResponse": api_types.PropagateResponse,
        "SessionStatus": api_types.SessionStatusResponse,
        "RemoveObjectResponse": api_types.RemoveObjectResponse,
        "RemoveConceptResponse": api_types.RemoveConceptResponse,
        "ResetSessionResponse": api_types.ResetSessionResponse,
        "CloseSessionResponse": api_types.CloseSessionResponse,
        "SessionList": api_types.SessionsListResponse,
        "Error": api_types.ErrorResponse,
    }
    checked = sum(_check_typed_dict(t, schemas[name], name) for name, t in pairs.items())
    messages = schemas["PropagateStreamMessage"]["oneOf"]
    kinds = [api_types.FrameMessage, api_types.CompleteMessage, api_types.ErrorMessage]
    for index, (typed, message) in enumerate(zip(kinds, messages)):
        checked += _check_typed_dict(typed, message, f"PropagateStreamMessage {index}")
    assert checked == 38  # the nested objects were compared too


def test_degraded_server(degraded_server: ServerProcess, image: bytes) -> None:
    with Sam3Client(degraded_server.url) as sam3:
        # /health answers 503 while the model is not serving: the body is still returned.
        raw = httpx.get(f"{degraded_server.url}/health")
        assert raw.status_code == 503
        health = sam3.health()
        assert health == raw.json()
        assert health["status"] == "degraded" and health["model"] is None

        # Model routes: 503 not_ready, as the server's own answer says (1 request).
        with pytest.raises(Sam3Error) as caught:
            sam3.segment(image, [text_prompt("cat")])
        error = caught.value
        assert (error.status, error.code) == (503, "not_ready")
        assert error.message == "the model failed to load; see the server logs"
        assert error.request_id is not None and UUID.match(error.request_id)
        assert error.retry_after is None  # this 503 carries no Retry-After

        # Over RATE_LIMIT_REQUESTS_PER_MINUTE: 429 rate_limited with Retry-After.
        for _ in range(DEGRADED_RATE_LIMIT - 1):
            assert sam3.info()["status"] == "degraded"
        with pytest.raises(Sam3Error) as caught:
            sam3.info()
        limited = caught.value
        assert (limited.status, limited.code) == (429, "rate_limited")
        assert limited.retry_after is not None and 0 < limited.retry_after <= 60
        assert "Retry-After" in limited.message
        assert str(limited) == f"429 rate_limited: {limited.message}"
        # /health is never limited.
        assert sam3.health()["status"] == "degraded"


# --- images ----------------------------------------------------------------------------------


def test_segment_by_text(client: Sam3Client, server: ServerProcess, image: bytes) -> None:
    prompts = [text_prompt("cat")]
    result = client.segment(image, prompts, confidence_threshold=0.0)
    raw = raw_post(
        server,
        "/api/v1/image/segment",
        {
            "image": base64.b64encode(image).decode(),
            "prompts": [{"type": "text", "text": "cat"}],
            "confidence_threshold": 0.0,
        },
    )
    assert raw.status_code == 200
    assert without_timing(dict(result)) == without_timing(raw.json())
    assert result["num_masks"] == len(result["masks"]) > 0
    assert len(result["boxes"]) == len(result["scores"]) == result["num_masks"]
    assert result["labels"] == ["cat"] * result["num_masks"]
    assert result["image_size"] == {"width": WIDTH, "height": HEIGHT}
    assert result["visualization_url"] is None
    check_masks(result["masks"], HEIGHT, WIDTH)

    # Without confidence_threshold the server's default (0.5) applies.
    default = client.segment(image, prompts)
    assert default["scores"] == [s for s in result["scores"] if s > 0.5]
    assert default["num_masks"] == len(default["masks"]) == len(default["scores"])


def test_segment_image_forms(client: Sam3Client, image: bytes, tmp_path: Path) -> None:
    """bytes, a path, a binary file, a base64 str and a data URL are the same image."""
    path = tmp_path / "image.png"
    path.write_bytes(image)
    encoded = base64.b64encode(image).decode()
    prompts = [point_prompt([[0.25, 0.5]])]
    expected = without_timing(dict(client.segment(image, prompts)))
    with path.open("rb") as file:
        data_url = f"data:image/png;base64,{encoded}"
        forms: list[Any] = [bytearray(image), path, file, encoded, data_url]
        for form in forms:
            assert without_timing(dict(client.segment(form, prompts))) == expected
    with pytest.raises(TypeError):
        client.segment(12345, prompts)  # type: ignore[arg-type]


def test_segment_by_point_and_box(client: Sam3Client, server: ServerProcess, image: bytes) -> None:
    result = client.segment(image, [point_prompt([[0.5, 0.5], [0.1, 0.1]], [1, 0])])
    clicks = {"type": "point", "points": [[0.5, 0.5], [0.1, 0.1]], "point_labels": [1, 0]}
    raw = raw_post(
        server,
        "/api/v1/image/segment",
        {"image": base64.b64encode(image).decode(), "prompts": [clicks]},
    )
    assert without_timing(dict(result)) == without_timing(raw.json())
    assert result["num_masks"] == len(result["masks"]) == 1
    assert result["labels"] == ["point"]
    assert 0 <= result["scores"][0] <= 1 and len(result["boxes"][0]) == 4
    check_masks(result["masks"], HEIGHT, WIDTH)

    # A box as the clicked object's region hint, and boxes as exemplars of the visual concept.
    hinted = client.segment(image, [point_prompt([[0.5, 0.5]]), box_prompt([0.5, 0.5, 0.5, 0.5])])
    assert hinted["labels"] == ["point"]
    check_masks(hinted["masks"], HEIGHT, WIDTH)
    visual = client.segment(
        image,
        [box_prompt([0.5, 0.5, 0.4, 0.4]), box_prompt([0.2, 0.2, 0.1, 0.1], label=False)],
        confidence_threshold=0.0,
    )
    assert visual["labels"] == ["box"] * visual["num_masks"]
    assert visual["num_masks"] == len(visual["masks"]) > 0
    check_masks(visual["masks"], HEIGHT, WIDTH)


def test_visualization(client: Sam3Client, image: bytes) -> None:
    result = client.segment(image, [point_prompt([[0.5, 0.5]])], return_visualization=True)
    url = result["visualization_url"]
    assert isinstance(url, str) and url.startswith("/api/v1/visualizations/")
    assert client.visualization(url).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(Sam3Error) as caught:
        client.visualization("/api/v1/visualizations/missing.png")
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_cached_features(client: Sam3Client, server: ServerProcess) -> None:
    fresh = png_bytes(WIDTH, HEIGHT, seed=2)  # not yet in the feature cache
    first = client.cached_features(fresh, ["cat"], confidence_threshold=0.0)
    assert first["cache_hit"] is False
    [entry] = first["results"]
    assert entry["prompt"] == "cat"
    assert entry["num_masks"] == len(entry["masks"]) == len(entry["scores"]) > 0
    check_masks(entry["masks"], HEIGHT, WIDTH)
    # The same cache serves /segment: same masks, boxes and scores for the same text.
    segmented = client.segment(fresh, [text_prompt("cat")], confidence_threshold=0.0)
    assert [entry["masks"], entry["boxes"], entry["scores"]] == [
        segmented["masks"],
        segmented["boxes"],
        segmented["scores"],
    ]

    again = client.cached_features(fresh, ["cat", "dog"], confidence_threshold=0.0)
    raw = raw_post(
        server,
        "/api/v1/image/cached-features",
        {
            "image": base64.b64encode(fresh).decode(),
            "text_prompts": ["cat", "dog"],
            "confidence_threshold": 0.0,
        },
    )
    assert again["cache_hit"] is True
    assert without_timing(dict(again)) == without_timing(raw.json())
    assert [r["prompt"] for r in again["results"]] == ["cat", "dog"]
    for result in again["results"]:
        assert result["num_masks"] == len(result["masks"])
        check_masks(result["masks"], HEIGHT, WIDTH)
    with pytest.raises(TypeError):
        client.cached_features(fresh, "cat")


# --- errors ----------------------------------------------------------------------------------


def test_typed_errors(client: Sam3Client, server: ServerProcess, image: bytes) -> None:
    # One click with two labels: the server's prompt planner refuses it.
    bad = {"type": "point", "points": [[0.5, 0.5]], "point_labels": [1, 0]}
    with pytest.raises(Sam3Error) as caught:
        client.segment(image, [bad])
    raw = raw_post(
        server,
        "/api/v1/image/segment",
        {"image": base64.b64encode(image).decode(), "prompts": [bad]},
    ).json()["error"]
    error = caught.value
    assert (error.status, error.code, error.message) == (400, "invalid_prompt", raw["message"])
    assert raw["code"] == "invalid_prompt"
    assert error.request_id is not None and UUID.match(error.request_id)
    assert error.retry_after is None

    # Schema validation: an empty text.
    with pytest.raises(Sam3Error) as caught:
        client.segment(image, [text_prompt("")])
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert caught.value.message == (
        "invalid request: /prompts/0/text: must NOT have fewer than 1 characters"
    )

    # An unknown session, over HTTP and on the WebSocket.
    with pytest.raises(Sam3Error) as caught:
        client.session_status("no-such-session")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == "no video session no-such-session"
    stream = client.propagate_stream("no-such-session")
    with pytest.raises(Sam3Error) as caught:
        next(stream)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == "no video session no-such-session"
    assert caught.value.request_id == stream.request_id and stream.request_id is not None
    assert not stream.cancelled and stream.total_frames is None
    stream.close()

    # Errors pickle (for multiprocessing) with every field.
    copy = pickle.loads(pickle.dumps(error))
    assert repr(copy) == repr(error)
    assert (copy.status, copy.code, copy.request_id) == (400, "invalid_prompt", error.request_id)

    # Connection failures stay httpx's.
    with Sam3Client(f"http://127.0.0.1:{free_port()}", timeout=5.0) as nowhere:
        with pytest.raises(httpx.ConnectError):
            nowhere.info()

    with pytest.raises(ValueError, match="exactly one"):
        client.start_session()
    with pytest.raises(ValueError, match="got video, video_url"):
        client.start_session(b"x", video_url="https://example.com/a.mp4")


class _ProxyPage(http.server.BaseHTTPRequestHandler):
    """What a reverse proxy in front of the server may answer: not the API's JSON."""

    def do_GET(self) -> None:
        if self.path == "/health":
            body = b"<html><body>ok</body></html>"
            self.send_response(200)
        else:
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            self.send_response(502)
            self.send_header("Retry-After", "7")
            self.send_header("X-Request-Id", "proxy-1")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_non_json_answers() -> None:
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyPage)
    thread = threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with Sam3Client(f"http://127.0.0.1:{proxy.server_address[1]}") as sam3:
            with pytest.raises(Sam3Error) as caught:
                sam3.info()
            error = caught.value
            assert (error.status, error.code) == (502, "http_error")
            assert error.message == (
                "HTTP 502 Bad Gateway: <html><body><h1>502 Bad Gateway</h1></body></html>"
            )
            assert (error.request_id, error.retry_after) == ("proxy-1", 7.0)
            with pytest.raises(Sam3Error) as caught:
                sam3.health()  # a 200 that is not JSON
            assert (caught.value.status, caught.value.code) == (200, "invalid_response")
    finally:
        proxy.shutdown()
        proxy.server_close()


# --- API key ---------------------------------------------------------------------------------


def test_api_key(key_server: ServerProcess, image: bytes, clip: Path) -> None:
    prompts = [point_prompt([[0.5, 0.5]])]
    with Sam3Client(key_server.url) as anonymous:
        assert anonymous.info()["status"] == "ok"  # discovery and health need no key
        assert anonymous.health()["status"] == "ok"
        with pytest.raises(Sam3Error) as caught:
            anonymous.segment(image, prompts)
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        assert caught.value.message == "missing API key; send it in the X-API-Key header"
        # The WebSocket upgrade is refused before the 101, with the same error.
        with pytest.raises(Sam3Error) as caught:
            anonymous.propagate_stream("any-session")
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        assert caught.value.message == "missing API key; send it in the X-API-Key header"
        assert caught.value.request_id is not None and UUID.match(caught.value.request_id)

    with Sam3Client(key_server.url, api_key="wrong") as wrong:
        with pytest.raises(Sam3Error) as caught:
            wrong.list_sessions()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        assert caught.value.message == "invalid API key"
        with pytest.raises(Sam3Error) as caught:
            wrong.propagate_stream("any-session")
        assert (caught.value.status, caught.value.message) == (401, "invalid API key")

    with Sam3Client(key_server.url, api_key="k1") as keyed:
        result = keyed.segment(image, prompts)
        assert result["num_masks"] == 1
        session = keyed.start_session(clip)
        session_id = session["session_id"]
        assert session["video_info"] == CLIP_INFO
        keyed.add_prompt(session_id, 0, prompts)
        http_frames = keyed.propagate(session_id)["results"]
        # The key travels as the sam3.key.<base64url> subprotocol only (no header on the
        # upgrade), as a browser sends it; the server selects sam3.v1.
        with keyed.propagate_stream(session_id) as stream:
            frames = [frame_body(dict(m)) for m in stream]
        assert stream.subprotocol == "sam3.v1"
        assert stream.total_frames == 6 and not stream.cancelled
        assert frames == list(http_frames.values())
        assert keyed.close_session(session_id)["status"] == "closed"


# --- video sessions --------------------------------------------------------------------------


def test_video_session(client: Sam3Client, clip: Path) -> None:
    started = client.start_session(clip)
    session_id = started["session_id"]
    assert UUID.match(session_id)
    assert started == {"session_id": session_id, "video_info": CLIP_INFO, "status": "ready"}
    listed = client.list_sessions()
    [summary] = [s for s in listed["sessions"] if s["session_id"] == session_id]
    assert (summary["type"], summary["status"], summary["objects_count"]) == ("video", "ready", 0)
    assert listed["total_sessions"] == len(listed["sessions"])

    prompted = client.add_prompt(session_id, 0, [point_prompt([[0.5, 0.5]])])
    assert (prompted["frame_index"], prompted["obj_id"], prompted["status"]) == (
        0,
        [1],
        "prompt_added",
    )
    assert len(prompted["masks"]) == len(prompted["scores"]) == len(prompted["present"]) == 1
    check_masks(prompted["masks"], 48, 64)

    # HTTP: the whole result.
    propagated = client.propagate(session_id)
    assert propagated["session_id"] == session_id and propagated["total_frames"] == 6
    results = propagated["results"]
    assert list(results) == [str(i) for i in range(6)]
    for index, frame in results.items():
        assert frame["frame_index"] == int(index)
        assert [o["id"] for o in frame["objects"]] == [1]
        check_masks([o["mask"] for o in frame["objects"]], 48, 64)

    # WebSocket: the same frames, in the same order.
    stream = client.propagate_stream(session_id)
    assert isinstance(stream, PropagationStream) and UUID.match(stream.request_id or "")
    messages = list(stream)
    assert [m["frame_index"] for m in messages] == list(range(6))
    assert [frame_body(dict(m)) for m in messages] == list(results.values())
    assert (stream.total_frames, stream.completed, stream.cancelled) == (6, True, False)

    status = client.session_status(session_id)
    assert status == {
        "session_id": session_id,
        "status": "ready",
        "current_objects": [1],
        "concepts": [],
        "frames_processed": 6,
        "total_frames": 6,
        "gpu_memory_used_mb": status["gpu_memory_used_mb"],
    }
    assert status["gpu_memory_used_mb"] > 0

    # Backward from the last frame: the stream in processing order, HTTP keyed by index.
    backward = client.propagate(session_id, "backward", start_frame_index=5)
    assert sorted(backward["results"], key=int) == [str(i) for i in range(6)]
    streamed = list(client.propagate_stream(session_id, "backward", start_frame_index=5))
    assert [m["frame_index"] for m in streamed] == [5, 4, 3, 2, 1, 0]
    assert {str(m["frame_index"]): frame_body(dict(m)) for m in streamed} == backward["results"]
    limited = list(client.propagate_stream(session_id, max_frames=2))
    assert [m["frame_index"] for m in limited] == [0, 1]
    assert client.close_session(session_id)["status"] == "closed"


def test_stream_cancellation(client: Sam3Client, long_clip: Path) -> None:
    session_id = client.start_session(long_clip)["session_id"]
    client.add_prompt(session_id, 0, [point_prompt([[0.5, 0.5]])])
    assert client.session_status(session_id)["frames_processed"] == 1

    # Breaking out of the loop drops the stream, which closes the socket: the server cancels
    # the propagation before its next frame, long before the end of the video.
    for message in client.propagate_stream(session_id):
        first = frame_body(dict(message))
        break
    wait_ready(client, session_id)
    assert client.session_status(session_id)["frames_processed"] < LONG_CLIP_FRAMES
    reference = client.propagate(session_id, max_frames=6)["results"]
    assert list(reference) == [str(i) for i in range(6)]
    assert first == reference["0"]

    # A threading.Event, checked between frames (and while waiting for one).
    cancel = threading.Event()
    stream = client.propagate_stream(session_id, cancel=cancel)
    seen = []
    for message in stream:
        seen.append(message["frame_index"])
        cancel.set()
    assert seen == [0]
    assert (stream.cancelled, stream.completed, stream.total_frames) == (True, False, None)
    wait_ready(client, session_id)

    # close() when leaving the with block, after one frame; closing again does nothing.
    with client.propagate_stream(session_id) as stream:
        assert next(stream)["frame_index"] == 0
    assert stream.cancelled
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()
    wait_ready(client, session_id)

    # No message within message_timeout: TimeoutError, and the socket is closed (cancelled).
    stream = client.propagate_stream(session_id, message_timeout=0)
    with pytest.raises(TimeoutError, match="no message from the server within 0 s"):
        next(stream)
    wait_ready(client, session_id)

    # close() from another thread ends the iterating thread's loop without an error.
    stream = client.propagate_stream(session_id)
    two_frames = threading.Event()
    received: list[int] = []

    def consume() -> None:
        for message in stream:
            received.append(message["frame_index"])
            if len(received) == 2:
                two_frames.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert two_frames.wait(30)
    stream.close()
    consumer.join(30)
    assert not consumer.is_alive()
    assert received[:2] == [0, 1] and len(received) < LONG_CLIP_FRAMES
    assert stream.cancelled
    wait_ready(client, session_id)

    # While a propagation runs, another is refused: 409 session_busy (without Retry-After).
    running = client.propagate_stream(session_id)
    assert next(running)["frame_index"] == 0
    assert client.session_status(session_id)["status"] == "propagating"
    with pytest.raises(Sam3Error) as caught:
        client.propagate(session_id, max_frames=1)
    assert (caught.value.status, caught.value.code) == (409, "session_busy")
    assert caught.value.retry_after is None
    busy_stream = client.propagate_stream(session_id, max_frames=1)
    with pytest.raises(Sam3Error) as caught:
        next(busy_stream)
    assert (caught.value.status, caught.value.code) == (409, "session_busy")
    running.close()
    wait_ready(client, session_id)

    # Afterwards the session propagates as before.
    streamed = [frame_body(dict(m)) for m in client.propagate_stream(session_id, max_frames=6)]
    assert streamed == list(reference.values())
    client.close_session(session_id)


def test_stream_closed_by_server_shutdown(
    bundle: Path, long_clip: Path, tmp_path: Path
) -> None:
    """A server that shuts down mid-stream closes it (1001): Sam3Error connection_closed."""
    own = start_server("shutdown", tmp_path, {"SAM3_CHECKPOINT": str(bundle)})
    try:
        with Sam3Client(own.url) as sam3:
            session_id = sam3.start_session(long_clip)["session_id"]
            sam3.add_prompt(session_id, 0, [point_prompt([[0.5, 0.5]])])
            stream = sam3.propagate_stream(session_id)
            assert next(stream)["frame_index"] == 0
            own.process.send_signal(signal.SIGTERM)
            with pytest.raises(Sam3Error) as caught:
                for _ in stream:
                    pass
            error = caught.value
            assert (error.status, error.code, error.close_code) == (0, "connection_closed", 1001)
            assert error.message == (
                "the server closed the stream before it completed "
                "(close code 1001: server shutting down)"
            )
            assert error.request_id == stream.request_id
            assert not stream.cancelled and stream.total_frames is None
            assert own.process.wait(30) == 0
    finally:
        own.stop()


def test_objects_concepts_reset_close(client: Sam3Client, clip: Path) -> None:
    session_id = client.start_session(clip)["session_id"]
    client.add_prompt(session_id, 0, [point_prompt([[0.5, 0.5]])])
    second = client.add_prompt(session_id, 2, [box_prompt([0.3, 0.3, 0.2, 0.2])])
    assert second["obj_id"] == [1, 2]
    refined = client.add_prompt(session_id, 0, [point_prompt([[0.4, 0.4], [0.9, 0.9]], [1, 0])], 1)
    assert refined["obj_id"] == [1, 2]

    assert client.remove_object(session_id, 2) == {
        "session_id": session_id,
        "obj_id": 2,
        "status": "removed",
    }
    assert client.session_status(session_id)["current_objects"] == [1]
    with pytest.raises(Sam3Error) as caught:
        client.remove_object(session_id, 2)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == f"session {session_id} has no object 2"
    with pytest.raises(Sam3Error) as caught:
        client.remove_concept(session_id, 1)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == f"session {session_id} has no concept 1"

    # Text prompts need a session without clicked objects.
    with pytest.raises(Sam3Error) as caught:
        client.add_prompt(session_id, 0, [text_prompt("cat")])
    assert (caught.value.status, caught.value.code) == (400, "invalid_prompt")
    assert client.reset_session(session_id) == {
        "session_id": session_id,
        "status": "reset",
        "objects_cleared": 1,
    }
    status = client.session_status(session_id)
    assert (status["current_objects"], status["frames_processed"]) == ([], 0)

    # Concept tracking: a text prompt, then the concept removed with its objects.
    concept = client.add_prompt(session_id, 0, [text_prompt("cat")])
    assert concept["concepts"] == [{"concept_id": 1, "text": "cat"}]
    assert concept["concept_ids"] == [1] * len(concept["obj_id"])
    tracked = client.session_status(session_id)["concepts"]
    assert [(c["concept_id"], c["text"]) for c in tracked] == [(1, "cat")]
    http_frames = client.propagate(session_id, hotstart_delay=0)["results"]
    streamed = [frame_body(dict(m)) for m in client.propagate_stream(session_id, hotstart_delay=0)]
    assert streamed == list(http_frames.values())
    object_ids = client.session_status(session_id)["concepts"][0]["object_ids"]
    removed = client.remove_concept(session_id, 1)
    assert removed == {
        "session_id": session_id,
        "concept_id": 1,
        "removed_objects": object_ids,
        "status": "removed",
    }
    assert client.session_status(session_id)["concepts"] == []

    closed = client.close_session(session_id)
    assert (closed["session_id"], closed["status"]) == (session_id, "closed")
    assert closed["memory_freed_mb"] >= 0
    with pytest.raises(Sam3Error) as caught:
        client.session_status(session_id)
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    with pytest.raises(Sam3Error) as caught:
        client.close_session(session_id)
    assert caught.value.status == 404


def test_start_session_sources(client: Sam3Client, clip: Path, video_roots: Path) -> None:
    data = clip.read_bytes()
    on_server = video_roots / "clip.mkv"
    shutil.copyfile(clip, on_server)
    devices = video_devices(client)
    started = []
    with clip.open("rb") as file:
        for kwargs in (
            {"video": data},
            {"video": str(clip)},
            {"video": file},
            {"video_path": on_server},
            {"video_base64": data},
            {"video_base64": base64.b64encode(data).decode()},
            {"video": data, "session_id": "py-client-upload", "gpu_ids": devices},
            {"video_path": str(on_server), "session_id": "py-client-json", "gpu_ids": devices},
        ):
            session = client.start_session(**kwargs)
            assert (session["video_info"], session["status"]) == (CLIP_INFO, "ready"), kwargs
            started.append(session["session_id"])
    assert started[-2:] == ["py-client-upload", "py-client-json"]
    with pytest.raises(Sam3Error) as caught:
        client.start_session(data, session_id="py-client-upload")
    assert (caught.value.status, caught.value.code) == (409, "session_exists")
    with pytest.raises(Sam3Error) as caught:
        client.start_session(video_url="http://127.0.0.1:1/clip.mkv")
    assert (caught.value.status, caught.value.code) == (400, "url_not_allowed")
    with pytest.raises(Sam3Error) as caught:
        client.start_session(video_path="/etc/hostname")
    assert (caught.value.status, caught.value.code) == (403, "path_not_allowed")
    with pytest.raises(Sam3Error) as caught:
        client.start_session(b"not a video")
    assert (caught.value.status, caught.value.code) == (422, "invalid_video")
    for session_id in started:
        assert client.close_session(session_id)["status"] == "closed"
