"""Fixtures of the client tests: real servers (node dist/src/main.js) as child processes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_test_support import (
    DEGRADED_RATE_LIMIT,
    LONG_CLIP_FRAMES,
    ServerProcess,
    start_server,
    tiny_bundle_dir,
    write_clip,
)


# Installed with `.venv/bin/pip install -e clients/python`; else from the source tree.
if importlib.util.find_spec("sam3_client") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The tiny random-weight bundle (shared with the Node tests' cache)."""
    return tiny_bundle_dir()


@pytest.fixture(scope="session")
def video_roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the main server accepts video_path files from (VIDEO_PATH_ROOTS)."""
    return tmp_path_factory.mktemp("video-roots")


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, bundle: Path, video_roots: Path
) -> Iterator[ServerProcess]:
    """The main server: no API key, no rate limit."""
    process = start_server(
        "main",
        tmp_path_factory.mktemp("server-main"),
        {
            "SAM3_CHECKPOINT": str(bundle),
            "RATE_LIMIT_ENABLED": "false",
            "VIDEO_PATH_ROOTS": str(video_roots),
        },
    )
    yield process
    alive = process.process.poll() is None
    process.stop()
    if not alive:
        pytest.fail(f"the main server died during the tests:\n{process.log_tail()}")


@pytest.fixture(scope="session")
def key_server(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[ServerProcess]:
    """A server with REQUIRE_API_KEY=true and the one key "k1"."""
    process = start_server(
        "api-key",
        tmp_path_factory.mktemp("server-api-key"),
        {
            "SAM3_CHECKPOINT": str(bundle),
            "REQUIRE_API_KEY": "true",
            "API_KEYS": "k1",
            "RATE_LIMIT_ENABLED": "false",
        },
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def degraded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose model fails to load (an empty bundle directory): /health is 503."""
    process = start_server(
        "degraded",
        tmp_path_factory.mktemp("server-degraded"),
        {
            "SAM3_CHECKPOINT": str(tmp_path_factory.mktemp("empty-bundle")),
            "RATE_LIMIT_REQUESTS_PER_MINUTE": str(DEGRADED_RATE_LIMIT),
        },
        statuses=("degraded",),
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lossless 6-frame 64x48 video at 10 fps (FFV1 in Matroska)."""
    return write_clip(tmp_path_factory.mktemp("videos") / "clip.mkv")


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As clip, with LONG_CLIP_FRAMES frames (a propagation over it takes seconds on a CPU)."""
    return write_clip(tmp_path_factory.mktemp("videos") / "long.mkv", frames=LONG_CLIP_FRAMES)
