"""Python client of the SAM3 inference server (HTTP + WebSocket).

Example::

    from pathlib import Path
    from sam3_client import Sam3Client, decode_mask, text_prompt

    with Sam3Client("http://127.0.0.1:8000") as client:
        result = client.segment(Path("photo.jpg"), [text_prompt("person")])
        masks = [decode_mask(rle) for rle in result["masks"]]
"""

from ._version import __version__
from .client import ImageInput, PropagationStream, Sam3Client, VideoInput, encode_image
from .errors import ERROR_STATUS, Sam3Error
from .masks import decode_counts, decode_mask, decode_mask_numpy, has_pycocotools
from .prompts import box_prompt, point_prompt, text_prompt

__all__ = [
    "ERROR_STATUS",
    "ImageInput",
    "PropagationStream",
    "Sam3Client",
    "Sam3Error",
    "VideoInput",
    "__version__",
    "box_prompt",
    "decode_counts",
    "decode_mask",
    "decode_mask_numpy",
    "encode_image",
    "has_pycocotools",
    "point_prompt",
    "text_prompt",
]
