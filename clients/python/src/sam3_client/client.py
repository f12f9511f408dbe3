"""The synchronous client: one method per endpoint of the SAM3 server (SPEC.md)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Union, cast
from urllib.parse import quote

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from ._version import __version__
from .errors import (
    CONNECTION_CLOSED,
    ERROR_STATUS,
    INVALID_RESPONSE,
    Sam3Error,
    _header,
)
from .types import (
    CachedFeaturesResponse,
    CloseSessionResponse,
    Direction,
    FrameMessage,
    GpuId,
    HealthResponse,
    PropagateResponse,
    RemoveConceptResponse,
    RemoveObjectResponse,
    ResetSessionResponse,
    SegmentResponse,
    ServerInfo,
    SessionsListResponse,
    SessionStatusResponse,
    StartSessionResponse,
    VideoPromptResponse,
)

__all__ = [
    "ImageInput",
    "PropagationStream",
    "Sam3Client",
    "VideoInput",
    "encode_image",
]

#: An image: the encoded file's bytes (JPEG, PNG or WebP), a path to it, an open binary file,
#: or a str that already is base64 (a ``data:image/...;base64,`` prefix is accepted).
ImageInput = Union[bytes, bytearray, memoryview, str, os.PathLike[str], IO[bytes]]
#: A video to upload: its bytes, a local path (str or os.PathLike) or an open binary file.
VideoInput = Union[bytes, bytearray, memoryview, str, os.PathLike[str], IO[bytes]]
#: Any prompt dict (see prompts.py for constructors).
PromptInput = Mapping[str, Any]

#: The WebSocket subprotocol the server selects (protocol version 1).
WS_PROTOCOL = "sam3.v1"
#: Prefix of the subprotocol that carries the API key, as a browser sends it.
WS_KEY_PROTOCOL_PREFIX = "sam3.key."
#: Largest stream message accepted (a frame carries one RLE mask per object).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: How often a stream with a ``cancel`` event looks at it while waiting for a frame, seconds.
CANCEL_POLL_SECONDS = 0.05
_CLOSE_TIMEOUT_SECONDS = 5.0


class _Unset:
    """The default of a per-call ``timeout``: the client's timeout."""

    def __repr__(self) -> str:
        return "<the client's timeout>"


_UNSET = _Unset()
TimeoutArg = Union[float, None, _Unset]


def _read_bytes(source: bytes | bytearray | memoryview | os.PathLike[str] | IO[bytes]) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, os.PathLike):
        return Path(source).read_bytes()
    read = getattr(source, "read", None)
    if callable(read):
        data = read()
        if not isinstance(data, bytes):
            raise TypeError("the file must be opened in binary mode ('rb')")
        return data
    raise TypeError(f"expected bytes, a path or a binary file, not {type(source).__name__}")


def encode_image(image: ImageInput) -> str:
    """The base64 string of an image for a request body.

    A str is taken to be base64 already (or a data URL) and is sent as is; bytes, a path
    (os.PathLike, e.g. pathlib.Path) or a binary file are read and base64-encoded.
    """
    if isinstance(image, str):
        return image
    return base64.b64encode(_read_bytes(image)).decode("ascii")


def _base64url(text: str) -> str:
    """base64url of the UTF-8 bytes, unpadded (Node's Buffer 'base64url')."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def _segment(value: str | int) -> str:
    """One URL path segment (a session id or an object id), percent-encoded."""
    return quote(str(value), safe="")


def _prompt_list(prompts: Sequence[PromptInput]) -> list[dict[str, Any]]:
    if isinstance(prompts, Mapping):
        raise TypeError("prompts must be a list of prompt dicts, not one dict")
    return [dict(prompt) for prompt in prompts]


def _propagate_body(
    direction: Direction,
    start_frame_index: int | None,
    max_frames: int | None,
    hotstart_delay: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"direction": direction}
    if start_frame_index is not None:
        body["start_frame_index"] = start_frame_index
    if max_frames is not None:
        body["max_frames"] = max_frames
    if hotstart_delay is not None:
        body["hotstart_delay"] = hotstart_delay
    return body


@contextlib.contextmanager
def _upload(video: VideoInput) -> Generator[tuple[str, bytes | IO[bytes]], None, None]:
    """(file name, content) of a video to upload; a path is opened and closed here."""
    if isinstance(video, (bytes, bytearray, memoryview)):
        yield "video", bytes(video)
    elif isinstance(video, (str, os.PathLike)):
        path = Path(video)
        with path.open("rb") as file:
            yield path.name, file
    elif callable(getattr(video, "read", None)):
        name = getattr(video, "name", None)
        yield (Path(name).name if isinstance(name, str) and name else "video"), video
    else:
        raise TypeError(f"expected bytes, a path or a binary file, not {type(video).__name__}")


class Sam3Client:
    """A client of one SAM3 server.

    Args:
        base_url: The server's URL, e.g. ``"http://127.0.0.1:8000"`` (a path prefix behind a
            proxy is kept).
        api_key: Sent as ``X-API-Key`` on HTTP requests and, on the WebSocket, as the
            ``sam3.key.<base64url>`` subprotocol (as a browser sends it).
        timeout: Seconds for each HTTP request (connect, read, write), for opening a
            WebSocket and for waiting on each stream message; None waits forever.

    Every method raises Sam3Error for a non-2xx answer; connection failures stay httpx's
    (httpx.ConnectError, httpx.TimeoutException, ...) and, for opening a stream, websockets'
    or OSError. Use it as a context manager, or call close().
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        url = httpx.URL(self.base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"base_url must be http:// or https://, not {base_url!r}")
        self._ws_base = str(url.copy_with(scheme="wss" if url.scheme == "https" else "ws"))
        self.timeout = timeout
        self._api_key = api_key or None
        headers = {"User-Agent": f"sam3-client-python/{__version__}"}
        if self._api_key is not None:
            headers["X-API-Key"] = self._api_key
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __repr__(self) -> str:
        return f"Sam3Client({self.base_url!r})"

    def __enter__(self) -> Sam3Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the HTTP connections (open propagation streams are closed separately)."""
        self._http.close()

    # --- plumbing --------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeout: TimeoutArg = _UNSET,
        **kwargs: Any,
    ) -> Any:
        if json_body is not None:
            kwargs["json"] = json_body
        if not isinstance(timeout, _Unset):
            kwargs["timeout"] = timeout
        return self._json(self._http.request(method, path, **kwargs))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if not response.is_success:
            raise Sam3Error.from_httpx(response)
        try:
            return response.json()
        except ValueError:
            raise Sam3Error(
                response.status_code,
                INVALID_RESPONSE,
                f"the {response.status_code} response is not JSON",
                request_id=response.headers.get("x-request-id"),
            ) from None

    def _session_path(self, session_id: str, *rest: str | int) -> str:
        return "/".join(["/api/v1/video/session", _segment(session_id), *map(_segment, rest)])

    # --- info ------------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        """GET /: server name, version, model and the docs links."""
        return cast(ServerInfo, self._request("GET", "/"))

    def health(self) -> HealthResponse:
        """GET /health. Returns the body on 200 ("ok") and on 503 ("loading"/"degraded")."""
        response = self._http.get("/health")
        if response.status_code == 503:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("status") in ("loading", "degraded"):
                return cast(HealthResponse, body)
        return cast(HealthResponse, self._json(response))

    def openapi(self) -> dict[str, Any]:
        """GET /openapi.json: the OpenAPI 3.1 document of the API."""
        return cast("dict[str, Any]", self._request("GET", "/openapi.json"))

    # --- images ----------------------------------------------------------------------------

    def segment(
        self,
        image: ImageInput,
        prompts: Sequence[PromptInput],
        *,
        confidence_threshold: float | None = None,
        return_visualization: bool | None = None,
    ) -> SegmentResponse:
        """POST /api/v1/image/segment: masks for text, box and point prompts.

        ``image``: encoded bytes, a path (os.PathLike), a binary file, or a base64 str.
        ``confidence_threshold`` defaults to the server's IMAGE_MODEL_CONFIDENCE_THRESHOLD.
        """
        body: dict[str, Any] = {"image": encode_image(image), "prompts": _prompt_list(prompts)}
        if confidence_threshold is not None:
            body["confidence_threshold"] = confidence_threshold
        if return_visualization is not None:
            body["return_visualization"] = return_visualization
        response = self._request("POST", "/api/v1/image/segment", json_body=body)
        return cast(SegmentResponse, response)

    def cached_features(
        self,
        image: ImageInput,
        text_prompts: Sequence[str],
        *,
        confidence_threshold: float | None = None,
    ) -> CachedFeaturesResponse:
        """POST /api/v1/image/cached-features: one image, many text prompts."""
        if isinstance(text_prompts, str):
            raise TypeError("text_prompts must be a list of str, not one str")
        body: dict[str, Any] = {"image": encode_image(image), "text_prompts": list(text_prompts)}
        if confidence_threshold is not None:
            body["confidence_threshold"] = confidence_threshold
        return cast(
            CachedFeaturesResponse,
            self._request("POST", "/api/v1/image/cached-features", json_body=body),
        )

    def visualization(self, url_path: str) -> bytes:
        """The PNG at a ``visualization_url`` of a segment response."""
        if not url_path.startswith("/"):
            raise ValueError("url_path must be the visualization_url path, e.g. /api/v1/...")
        response = self._http.get(url_path)
        if not response.is_success:
            raise Sam3Error.from_httpx(response)
        return response.content

    # --- video sessions --------------------------------------------------------------------

    def start_session(
        self,
        video: VideoInput | None = None,
        *,
        video_path: str | os.PathLike[str] | None = None,
        video_url: str | None = None,
        video_base64: str | bytes | None = None,
        session_id: str | None = None,
        gpu_ids: Sequence[GpuId] | None = None,
    ) -> StartSessionResponse:
        """POST /api/v1/video/session/start, from exactly one source.

        ``video``: a local file (path, bytes or binary file), uploaded as multipart/form-data.
        ``video_path``: a file on the server's machine (under its VIDEO_PATH_ROOTS).
        ``video_url``: a URL the server downloads. ``video_base64``: the file, base64 (a str
        is sent as is, bytes are encoded). ``gpu_ids``: devices the session may go on.
        """
        given = [
            name
            for name, value in (
                ("video", video),
                ("video_path", video_path),
                ("video_url", video_url),
                ("video_base64", video_base64),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of video, video_path, video_url, video_base64"
                + (f" (got {', '.join(given)})" if given else "")
            )
        path = "/api/v1/video/session/start"
        if video is not None:
            fields: dict[str, str] = {}
            if session_id is not None:
                fields["session_id"] = session_id
            if gpu_ids is not None:
                fields["gpu_ids"] = json.dumps(list(gpu_ids))
            with _upload(video) as (name, content):
                response = self._http.post(
                    path,
                    files={"video": (name, content, "application/octet-stream")},
                    data=fields,
                )
            return cast(StartSessionResponse, self._json(response))
        body: dict[str, Any] = {}
        if video_path is not None:
            body["video_path"] = os.fspath(video_path)
        elif video_url is not None:
            body["video_url"] = video_url
        elif isinstance(video_base64, (bytes, bytearray, memoryview)):
            body["video_base64"] = base64.b64encode(video_base64).decode("ascii")
        else:
            body["video_base64"] = video_base64
        if session_id is not None:
            body["session_id"] = session_id
        if gpu_ids is not None:
            body["gpu_ids"] = list(gpu_ids)
        return cast(StartSessionResponse, self._request("POST", path, json_body=body))

    def list_sessions(self) -> SessionsListResponse:
        """GET /api/v1/video/sessions."""
        return cast(SessionsListResponse, self._request("GET", "/api/v1/video/sessions"))

    def add_prompt(
        self,
        session_id: str,
        frame_index: int,
        prompts: Sequence[PromptInput],
        obj_id: int | None = None,
    ) -> VideoPromptResponse:
        """POST .../prompt: clicks (and at most one box) for one object on one frame.

        ``obj_id`` None creates a new object; a known id refines that object.
        """
        body: dict[str, Any] = {"frame_index": frame_index, "prompts": _prompt_list(prompts)}
        if obj_id is not None:
            body["obj_id"] = obj_id
        return cast(
            VideoPromptResponse,
            self._request("POST", self._session_path(session_id, "prompt"), json_body=body),
        )

    def propagate(
        self,
        session_id: str,
        direction: Direction = "forward",
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        *,
        hotstart_delay: int | None = None,
        timeout: TimeoutArg = _UNSET,
    ) -> PropagateResponse:
        """POST .../propagate: tracks every object through the video; the whole result.

        ``timeout`` overrides the client's for this request (a long video takes a while).
        """
        body = _propagate_body(direction, start_frame_index, max_frames, hotstart_delay)
        path = self._session_path(session_id, "propagate")
        response = self._request("POST", path, json_body=body, timeout=timeout)
        return cast(PropagateResponse, response)

    def propagate_stream(
        self,
        session_id: str,
        direction: Direction = "forward",
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        *,
        hotstart_delay: int | None = None,
        cancel: threading.Event | None = None,
        message_timeout: TimeoutArg = _UNSET,
    ) -> PropagationStream:
        """WS /ws/propagate/{id}: the propagation's frames as they are computed.

        Returns an iterator of the ``{"type": "frame", ...}`` messages, in processing order;
        it ends at ``{"type": "complete"}`` (then ``stream.total_frames`` is set) and raises
        Sam3Error at ``{"type": "error"}``, or with code ``connection_closed`` when the socket
        closes before either (e.g. on server shutdown). Closing it (``close()``, leaving a
        ``with`` block, dropping it after breaking out of a ``for`` loop, or setting
        ``cancel``) closes the socket, which cancels the propagation on the server before its
        next frame.

        A refused upgrade (401, 429, 503) raises Sam3Error here; an unknown session or a
        busy one raises on the first iteration (the server answers those on the socket).
        ``message_timeout``: longest wait for one message (default: the client's timeout);
        past it the socket is closed and TimeoutError raised.
        """
        protocols = [Subprotocol(WS_PROTOCOL)]
        if self._api_key is not None:
            protocols.append(Subprotocol(WS_KEY_PROTOCOL_PREFIX + _base64url(self._api_key)))
        url = f"{self._ws_base}/ws/propagate/{_segment(session_id)}"
        body = _propagate_body(direction, start_frame_index, max_frames, hotstart_delay)
        wait = self.timeout if isinstance(message_timeout, _Unset) else message_timeout
        with contextlib.ExitStack() as stack:
            try:
                connection = stack.enter_context(
                    connect(
                        url,
                        subprotocols=protocols,
                        open_timeout=self.timeout,
                        close_timeout=_CLOSE_TIMEOUT_SECONDS,
                        max_size=MAX_MESSAGE_BYTES,
                        user_agent_header=f"sam3-client-python/{__version__}",
                    )
                )
            except InvalidStatus as error:
                refused = error.response
                raise Sam3Error.from_response(
                    refused.status_code,
                    refused.headers,
                    bytes(refused.body or b""),
                    refused.reason_phrase,
                ) from error
            try:
                connection.send(json.dumps(body))
            except ConnectionClosed:
                # The server refused at once (unknown session): its error message is queued.
                pass
            stream = PropagationStream(connection, session_id, cancel=cancel, message_timeout=wait)
            stack.pop_all()
        return stream

    def session_status(self, session_id: str) -> SessionStatusResponse:
        """GET .../status."""
        return cast(
            SessionStatusResponse, self._request("GET", self._session_path(session_id, "status"))
        )

    def remove_object(self, session_id: str, obj_id: int) -> RemoveObjectResponse:
        """DELETE .../object/{obj_id}."""
        return cast(
            RemoveObjectResponse,
            self._request("DELETE", self._session_path(session_id, "object", int(obj_id))),
        )

    def remove_concept(self, session_id: str, concept_id: int) -> RemoveConceptResponse:
        """DELETE .../concept/{concept_id}: a text concept and all its objects."""
        return cast(
            RemoveConceptResponse,
            self._request("DELETE", self._session_path(session_id, "concept", int(concept_id))),
        )

    def reset_session(self, session_id: str) -> ResetSessionResponse:
        """POST .../reset: clears every object and result; the video stays loaded."""
        return cast(
            ResetSessionResponse, self._request("POST", self._session_path(session_id, "reset"))
        )

    def close_session(self, session_id: str) -> CloseSessionResponse:
        """DELETE /api/v1/video/session/{id}: frees the session."""
        return cast(CloseSessionResponse, self._request("DELETE", self._session_path(session_id)))


class _StreamState:
    """What the receiving generator and its PropagationStream share (no reference cycle)."""

    def __init__(self) -> None:
        self.total_frames: int | None = None
        self.cancelled = False
        self.failed = False
        self.closing = False


def _next_message(
    connection: ClientConnection,
    state: _StreamState,
    cancel: threading.Event | None,
    message_timeout: float | None,
    request_id: str | None,
) -> str | bytes | None:
    """The next message; None once cancelled or closed by this side."""
    deadline = None if message_timeout is None else time.monotonic() + message_timeout
    while True:
        if cancel is not None and cancel.is_set():
            return None
        wait: float | None = None
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"no message from the server within {message_timeout} s")
        if cancel is not None:
            wait = CANCEL_POLL_SECONDS if wait is None else min(wait, CANCEL_POLL_SECONDS)
        try:
            return connection.recv(timeout=wait)
        except TimeoutError:
            continue
        except ConnectionClosed as closed:
            if state.closing:
                return None
            state.failed = True
            code = 1006 if closed.rcvd is None else closed.rcvd.code
            reason = "" if closed.rcvd is None else closed.rcvd.reason
            raise Sam3Error(
                0,
                CONNECTION_CLOSED,
                f"the server closed the stream before it completed (close code {code}"
                + (f": {reason})" if reason else ")"),
                request_id=request_id,
                close_code=code,
            ) from closed


def _stream_error(message: Mapping[str, Any], request_id: str | None) -> Sam3Error:
    error = message.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    text = error.get("message") if isinstance(error, dict) else None
    if not isinstance(code, str) or not isinstance(text, str):
        return Sam3Error(
            0, INVALID_RESPONSE, f"malformed error message: {message!r}", request_id=request_id
        )
    return Sam3Error(ERROR_STATUS.get(code, 0), code, text, request_id=request_id)


def _receive(
    connection: ClientConnection,
    state: _StreamState,
    cancel: threading.Event | None,
    message_timeout: float | None,
    request_id: str | None,
) -> Generator[FrameMessage, None, None]:
    try:
        while True:
            raw = _next_message(connection, state, cancel, message_timeout, request_id)
            if raw is None:
                state.cancelled = True
                return
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "frame":
                yield cast(FrameMessage, message)
            elif kind == "complete" and isinstance(message.get("total_frames"), int):
                state.total_frames = message["total_frames"]
                return
            elif kind == "error":
                state.failed = True
                raise _stream_error(cast("dict[str, Any]", message), request_id)
            else:
                state.failed = True
                snippet = raw[:200] if isinstance(raw, str) else repr(raw[:200])
                raise Sam3Error(
                    0,
                                    f"unexpected stream message: {snippet}",
                    request_id=request_id,
                )
    finally:
        connection.close()


class PropagationStream(Iterator[FrameMessage]):
    """The frames of one WebSocket propagation (see Sam3Client.propagate_stream).

    Attributes:
        session_id: The session propagated.
        request_id: X-Request-Id of the upgrade (the server's log lines carry it).
        subprotocol: The subprotocol the server selected ("sam3.v1").
        total_frames: The ``complete`` message's count once the stream ended; else None.
        cancelled: True when this side closed the stream before it completed.
    """

    def __init__(
        self,
        connection: ClientConnection,
        session_id: str,
        *,
        cancel: threading.Event | None = None,
        message_timeout: float | None = None,
    ) -> None:
        self.session_id = session_id
        response = connection.response
        self.request_id = None if response is None else _header(response.headers, "x-request-id")
        self.subprotocol: str | None = connection.subprotocol
        self._connection = connection
        self._state = _StreamState()
        self._frames = _receive(connection, self._state, cancel, message_timeout, self.request_id)

    @property
    def total_frames(self) -> int | None:
        return self._state.total_frames

    @property
    def completed(self) -> bool:
        """True once the ``complete`` message arrived."""
        return self._state.total_frames is not None

    @property
    def cancelled(self) -> bool:
        return self._state.cancelled

    def __iter__(self) -> PropagationStream:
        return self

    def __next__(self) -> FrameMessage:
        return next(self._frames)

    def close(self) -> None:
        """Closes the socket (the server cancels the propagation before its next frame).

        Safe to call more than once, and from another thread than the one iterating (that
        one's iteration then ends).
        """
        state = self._state
        if not state.closing:
            state.closing = True
            if state.total_frames is None and not state.failed:
                state.cancelled = True
        self._connection.close()
        try:
            self._frames.close()
        except ValueError:
            # Running in another thread: it returns on the closed socket.
            pass

    def __enter__(self) -> PropagationStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter shutdown, or a half-built object
            pass
