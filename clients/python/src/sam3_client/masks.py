"""Decoding of the server's masks: COCO compressed RLE (as pycocotools ``mask.encode``).

A mask is ``{"size": [height, width], "counts": "<string>"}``: run lengths over the pixels in
column-major order (x outer, y inner), alternating background and foreground, background
first. Each run is written as a little-endian number in 5-bit groups, one character per
group: ``chr(48 + group)``, with 0x20 set on every group but the last and 0x10 of the last
group as its sign bit; from the fourth run on, the number is the difference from the run two
places before (pycocotools ``rleToString`` / ``rleFrString``).

numpy is needed to decode (``pip install "sam3-client[masks]"``); pycocotools is used when it
is importable, else the decoder here, which gives the same arrays.
"""

from __future__ import annotations

import importlib
import importlib.util
import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["decode_counts", "decode_mask", "decode_mask_numpy", "has_pycocotools"]

_CHUNK_OFFSET = 48
_CHUNK_LIMIT = 64


def _require_numpy() -> None:
    if importlib.util.find_spec("numpy") is None:
        raise ImportError("decoding masks needs numpy: pip install 'sam3-client[masks]'")


def decode_counts(counts: str | bytes) -> list[int]:
    """The run lengths (background first) of a compressed counts string.

    Raises ValueError for a character outside the alphabet, a truncated number or a negative
    run.
    """
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    position = 0
    length = len(text)
    while position < length:
        value = 0
        shift = 0
        more = True
        while more:
            if position >= length:
                raise ValueError("RLE counts string is truncated")
            chunk = ord(text[position]) - _CHUNK_OFFSET
            if chunk < 0 or chunk >= _CHUNK_LIMIT:
                raise ValueError(f"RLE counts has an invalid character at {position}")
            value |= (chunk & 0x1F) << shift
            more = (chunk & 0x20) != 0
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"RLE run {len(runs)} is negative")
        runs.append(value)
    return runs


def _size(rle: Mapping[str, Any]) -> tuple[int, int]:
    size: Any = rle.get("size")
    try:
        if isinstance(size, (str, bytes)) or len(size) != 2 or any(
            isinstance(v, bool) for v in size
        ):
            raise TypeError
        height, width = operator.index(size[0]), operator.index(size[1])
    except TypeError:
        raise ValueError(f"RLE size {size!r} is not [height, width]") from None
    if height < 0 or width < 0:
        raise ValueError(f"RLE size {size!r} is not [height, width]")
    return height, width


def decode_mask_numpy(rle: Mapping[str, Any]) -> np.ndarray:
    """Decodes with numpy alone: an (height, width) uint8 array of 0 and 1.

    Raises ValueError when the runs do not cover exactly height x width pixels.
    """
    _require_numpy()
    import numpy as np

    height, width = _size(rle)
    counts = rle.get("counts")
    if not isinstance(counts, (str, bytes)):
        raise ValueError("RLE counts must be the compressed string")
    runs = decode_counts(counts)
    if sum(runs) != height * width:
        raise ValueError(
            f"RLE runs cover {sum(runs)} pixels, not {height} x {width} = {height * width}"
        )
    values = np.arange(len(runs), dtype=np.uint8) & 1
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    # Column-major: pixel (y, x) is at x * height + y.
    return np.ascontiguousarray(flat.reshape(width, height).T)


def has_pycocotools() -> bool:
    """Whether pycocotools can be imported (decode_mask then uses it)."""
    try:
        importlib.import_module("pycocotools.mask")
    except ImportError:
        return False
    return True


def decode_mask(rle: Mapping[str, Any], *, use_pycocotools: bool | None = None) -> np.ndarray:
    """A mask of the API as an (height, width) uint8 array of 0 and 1 (row-major).

    ``use_pycocotools``: None (default) uses pycocotools when it is importable, else
    decode_mask_numpy; True requires it; False never uses it. Both give equal arrays.
    """
    if use_pycocotools is None:
        use_pycocotools = has_pycocotools()
    if not use_pycocotools:
        return decode_mask_numpy(rle)
    _require_numpy()
    import numpy as np

    mask_utils = importlib.import_module("pycocotools.mask")
    height, width = _size(rle)
    counts = rle.get("counts")
    if not isinstance(counts, (str, bytes)):
        raise ValueError("RLE counts must be the compressed string")
    encoded = counts.encode("ascii") if isinstance(counts, str) else counts
    decoded = mask_utils.decode({"size": [height, width], "counts": encoded})
    return np.ascontiguousarray(decoded, dtype=np.uint8)
