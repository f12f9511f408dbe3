"""The client's pure parts: the RLE decoder against pycocotools, prompts, error parsing."""

from __future__ import annotations

import base64
import email.utils
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3_client import (
    ERROR_STATUS,
    Sam3Error,
    box_prompt,
    decode_counts,
    decode_mask,
    decode_mask_numpy,
    encode_image,
    has_pycocotools,
    point_prompt,
    text_prompt,
)
from sam3_client.client import _base64url
from sam3_client.errors import parse_retry_after

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def coco(mask: np.ndarray) -> dict[str, object]:
    """pycocotools' RLE of a (height, width) 0/1 array, counts as str (as the API sends it)."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = [
        np.zeros((1, 1), np.uint8),
        np.ones((1, 1), np.uint8),
        np.zeros((48, 64), np.uint8),
        np.ones((48, 64), np.uint8),
        np.ones((700, 900), np.uint8),  # one run of 630000: a 4-chunk number
    ]
    for height, width in ((3, 5), (48, 64), (1, 1000), (257, 3), (31, 33)):
        for density in (0.02, 0.5, 0.97):
            out.append((rng.random((height, width)) < density).astype(np.uint8))
    # Blobs: long runs whose differences are large and negative (the delta coding's sign).
    blob = np.zeros((120, 160), np.uint8)
    blob[10:100, 20:30] = 1
    blob[5:7, 40:150] = 1
    blob[60:119, 100:101] = 1
    out.append(blob)
    first = np.zeros((4, 4), np.uint8)
    first[0, 0] = 1  # starts with foreground: a leading run of 0
    out.append(first)
    return out


@pytest.mark.parametrize("index", range(len(masks())))
def test_decoders_equal_pycocotools(index: int) -> None:
    mask = masks()[index]
    rle = coco(mask)
    reference = mask_utils.decode({"size": rle["size"], "counts": str(rle["counts"]).encode()})
    for decoded in (
        decode_mask_numpy(rle),
        decode_mask(rle),
        decode_mask(rle, use_pycocotools=False),
        decode_mask(rle, use_pycocotools=True),
    ):
        assert decoded.dtype == np.uint8 and decoded.shape == mask.shape
        assert decoded.flags.c_contiguous
        np.testing.assert_array_equal(decoded, reference)
        np.testing.assert_array_equal(decoded, mask)
    runs = decode_counts(str(rle["counts"]))
    assert sum(runs) == mask.size
    # Column-major, background first: the first run is the background before the first 1.
    flat = mask.T.reshape(-1)
    assert runs[0] == (int(np.argmax(flat)) if flat.any() else flat.size)
    assert decode_counts(str(rle["counts"]).encode()) == runs


def test_decode_counts_known_values() -> None:
    # 2x2 mask [[0, 1], [1, 1]]: column-major pixels 0,1,1,1 -> runs [1, 3].
    rle = coco(np.array([[0, 1], [1, 1]]))
    assert rle["counts"] == "13"
    assert decode_counts("13") == [1, 3]
    # A number over 5 bits takes two characters; the 4th run is a difference (here -2).
    assert decode_counts(chr(48 + 0x20 + 8) + "1") == [40]
    assert decode_counts("3221") == [3, 2, 2, 3]  # 3 = 1 + 2 (the run two places before)
    # Runs [1, 5, 1, 2]: the 4th is stored as 2 - 5 = -3, one chunk 0x1D with its sign bit.
    column = np.array([[0], [1], [1], [1], [1], [1], [0], [1], [1]])
    assert coco(column)["counts"] == "151M"
    assert decode_counts("151M") == [1, 5, 1, 2]


def test_decode_errors() -> None:
    with pytest.raises(ValueError, match="invalid character"):
        decode_counts("1 2")
    with pytest.raises(ValueError, match="truncated"):
        decode_counts(chr(48 + 0x20))
    with pytest.raises(ValueError, match="negative"):
        decode_counts("1" + chr(48 + 0x1E))  # 1, then -2
    with pytest.raises(ValueError, match="cover"):
        decode_mask_numpy({"size": [2, 2], "counts": "12"})
    with pytest.raises(ValueError, match="not \\[height, width\\]"):
        decode_mask_numpy({"size": [2], "counts": "4"})
    with pytest.raises(ValueError, match="compressed string"):
        decode_mask_numpy({"size": [2, 2], "counts": [4]})
    assert has_pycocotools()


def test_prompts() -> None:
    assert text_prompt("red car") == {"type": "text", "text": "red car"}
    assert box_prompt((0.5, 0.5, 0.2, 0.1)) == {
        "type": "box",
        "box": [0.5, 0.5, 0.2, 0.1],
        "label": True,
    }
    assert box_prompt([0, 0, 1, 1], label=False)["label"] is False
    assert point_prompt([(0.1, 0.2), (0.3, 0.4)], [True, 0]) == {
        "type": "point",
        "points": [[0.1, 0.2], [0.3, 0.4]],
        "point_labels": [1, 0],
    }
    assert point_prompt([[0.5, 0.5]])["point_labels"] == [1]


def test_encode_image_and_key_protocol() -> None:
    assert encode_image(b"\x89PNG") == base64.b64encode(b"\x89PNG").decode()
    assert encode_image("aGVsbG8=") == "aGVsbG8="
    # Node's Buffer.from(key).toString('base64url'): unpadded, '-' and '_'.
    assert _base64url("a key") == "YSBrZXk"
    assert _base64url("\u00ff\u00fe?>") == "w7_Dvj8-"


def test_error_parsing() -> None:
    body = b'{"error": {"code": "overloaded", "message": "busy"}}'
    error = Sam3Error.from_response(
        429, {"Retry-After": "2", "X-Request-Id": "r-1"}, body, "Too Many Requests"
    )
    assert (error.status, error.code, error.message, error.request_id, error.retry_after) == (
        429,
        "overloaded",
        "busy",
        "r-1",
        2.0,
    )
    assert ERROR_STATUS["overloaded"] == 429
    # Not the API's error body: http_error, with the start of the body.
    error = Sam3Error.from_response(500, {}, b'{"error": "nope"}', "Internal Server Error")
    assert (error.code, error.message) == (
        "http_error",
        'HTTP 500 Internal Server Error: {"error": "nope"}',
    )
    long = Sam3Error.from_response(502, {}, b"x" * 500)
    assert long.message == "HTTP 502: " + "x" * 200 + "..."
    assert Sam3Error.from_response(503, {}, b"").message == "HTTP 503"
    # Retry-After: seconds or an HTTP date.
    assert parse_retry_after(None) is None
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None and 25 <= seconds <= 31
