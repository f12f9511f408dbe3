#!/usr/bin/env python3
"""pycocotools as the oracle for the native COCO RLE encoder (test/native/rle.test.ts).

  rle_reference.py encode <masks.json | masks.npy>
      masks.json: [{"height": h, "width": w, "data": "<base64 of h*w row-major bytes>"}, ...]
      masks.npy:  uint8 array [N, H, W] (or one mask [H, W]); nonzero is foreground.
      Prints a JSON list of pycocotools' compressed counts strings (mask.encode).
  rle_reference.py decode <rles.json>
      rles.json: [{"size": [h, w], "counts": "<compressed counts>"}, ...]
      Prints a JSON list of base64 strings: each mask decoded by pycocotools, row-major bytes
      (0 or 1).
"""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
from pycocotools import mask as mask_utils


def read_masks(path: str) -> list[np.ndarray]:
    if path.endswith(".npy"):
        array = np.load(path)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise SystemExit(f"{path}: expected [N, H, W] or [H, W], got shape {array.shape}")
        return [m for m in array]
    with open(path, encoding="utf-8") as handle:
        items = json.load(handle)
    masks = []
    for item in items:
        data = np.frombuffer(base64.b64decode(item["data"]), dtype=np.uint8)
        masks.append(data.reshape(item["height"], item["width"]))
    return masks


def encode(path: str) -> list[str]:
    counts = []
    for mask in read_masks(path):
        binary = np.asfortranarray((mask != 0).astype(np.uint8))
        counts.append(mask_utils.encode(binary)["counts"].decode("ascii"))
    return counts


def decode(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        items = json.load(handle)
    out = []
    for item in items:
        rle = {"size": [int(item["size"][0]), int(item["size"][1])], "counts": item["counts"].encode("ascii")}
        mask = mask_utils.decode(rle)
        out.append(base64.b64encode(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).decode("ascii"))
    return out


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("encode", "decode"):
        raise SystemExit(__doc__)
    result = encode(sys.argv[2]) if sys.argv[1] == "encode" else decode(sys.argv[2])
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
