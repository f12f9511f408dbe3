"""The error the client raises for every refusal of the server."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

__all__ = ["ERROR_STATUS", "Sam3Error"]

#: The HTTP status the server gives each of its error codes (src/server/errors.ts). A
#: WebSocket ``{"type": "error"}`` message carries only the code; its Sam3Error gets the
#: status the same code has over HTTP (0 for a code this table does not know).
ERROR_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "invalid_request": 400,
        "invalid_json": 400,
        "invalid_base64": 400,
        "invalid_prompt": 400,
        "invalid_device": 400,
        "url_not_allowed": 400,
        "unsupported_scheme": 400,
        "unauthorized": 401,
        "path_not_allowed": 403,
        "not_found": 404,
        "request_timeout": 408,
        "session_exists": 409,
        "session_busy": 409,
        "too_many_objects": 409,
        "payload_too_large": 413,
        "image_too_large": 413,
        "unsupported_media": 415,
        "invalid_image": 422,
        "invalid_video": 422,
        "no_decodable_frames": 422,
        "video_limits_exceeded": 422,
        "rate_limited": 429,
        "overloaded": 429,
        "too_many_sessions": 429,
        "headers_too_large": 431,
        "internal_error": 500,
        "download_failed": 502,
        "not_ready": 503,
        "device_out_of_memory": 503,
        "video_disabled": 503,
        "download_timeout": 504,
    }
)

#: The code of an error response whose body is not the API's JSON error (a proxy's HTML page,
#: an empty body): the client made it up, the server did not send it.
HTTP_ERROR = "http_error"
#: The code of a 2xx response whose body is not the JSON the endpoint answers with, and of a
#: WebSocket message that is none of frame, complete or error (as the TypeScript client).
INVALID_RESPONSE = "invalid_response"
#: The code of a propagation stream the server closed before its complete or error message
#: (server shutdown: 1001; a client that does not read is terminated: 1006).
CONNECTION_CLOSED = "connection_closed"

_BODY_SNIPPET_CHARS = 200


class Sam3Error(Exception):
    """A non-2xx answer of the server (or an ``{"type": "error"}`` stream message).

    Attributes:
        status: The HTTP status (for a stream error message: the status of its code over
            HTTP, see ERROR_STATUS).
        code: The API's snake_case error code, e.g. ``"invalid_prompt"`` or ``"not_found"``;
            ``"http_error"`` when the body was not the API's JSON error.
        message: The server's message, for a person.
        request_id: The response's ``X-Request-Id`` (the server logs carry the same id).
        retry_after: Seconds to wait before retrying, from ``Retry-After`` (429 and some
            503 answers), else None.
        close_code: For ``connection_closed``: the WebSocket close code (1006 when the
            connection dropped without one); else None.

    Codes the client makes up itself (status 0 where there is no HTTP status):
    ``http_error`` (an error answer that is not the API's JSON), ``invalid_response`` (a 2xx
    answer that is not JSON, or a stream message that is none of the API's) and
    ``connection_closed`` (streams).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.close_code = close_code

    def __repr__(self) -> str:
        return (
            f"Sam3Error(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r}, "
            f"retry_after={self.retry_after!r}, close_code={self.close_code!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (
            _rebuild,
            (
                self.status,
                self.code,
                self.message,
                self.request_id,
                self.retry_after,
                self.close_code,
            ),
        )

    @classmethod
    def from_response(
        cls,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        reason: str = "",
    ) -> Sam3Error:
        """The error of an HTTP answer (an httpx response, or a refused WebSocket upgrade)."""
        code, message = _error_body(body)
        if code is None or message is None:
            code = HTTP_ERROR
            text = body.decode("utf-8", errors="replace").strip()
            message = f"HTTP {status} {reason}".rstrip()
            if text:
                snippet = text[:_BODY_SNIPPET_CHARS]
                message += f": {snippet}" + ("..." if len(text) > len(snippet) else "")
        return cls(
            status,
            code,
            message,
            request_id=_header(headers, "x-request-id"),
            retry_after=parse_retry_after(_header(headers, "retry-after")),
        )

    @classmethod
    def from_httpx(cls, response: httpx.Response) -> Sam3Error:
        """The error of a non-2xx httpx response (its body must have been read)."""
        return cls.from_response(
            response.status_code, response.headers, response.content, response.reason_phrase
        )


def _rebuild(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    retry_after: float | None,
    close_code: int | None,
) -> Sam3Error:
    return Sam3Error(
        status,
        code,
        message,
        request_id=request_id,
        retry_after=retry_after,
        close_code=close_code,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        # Not every mapping is case-insensitive.
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _error_body(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) of an API error body ``{"error": {"code", "message"}}``, else Nones."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    if isinstance(code, str) and isinstance(message, str):
        return code, message
    return None, None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value: delay-seconds, or an HTTP date (seconds from now)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
