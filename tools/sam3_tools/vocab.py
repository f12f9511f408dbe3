"""Where the CLIP BPE vocabulary (open_clip's bpe_simple_vocab_16e6.txt.gz) comes from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"


def open_clip_vocab() -> Path | None:
    """The copy shipped in the open_clip_torch wheel, found without importing open_clip
    (importing it needs torchvision, which is not installed beside the CPU torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE
    return candidate if candidate.is_file() else None
