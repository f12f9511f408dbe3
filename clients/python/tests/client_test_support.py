"""Helpers of the client tests: the real server as a child process, its bundle, inputs.

The bundle is the one the Node tests use (test/helpers/server.ts cachedRandomBundle): exported
once per exporter version under ``<tmp>/sam3-test-bundles/tiny-0-<fingerprint>``, where the
fingerprint digests tools/**/*.py and .venv/pyvenv.cfg exactly as exporterFingerprint does, so
the two test suites share one export. SAM3_TEST_BUNDLE=<dir> uses that bundle instead.

(A module of its own name, not conftest.py: tools/tests has a conftest too, and both are
collected in one pytest run.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
SERVER_MAIN = REPO / "dist" / "src" / "main.js"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

#: Server configuration variables a developer's environment must not leak into the servers.
_CONFIG_PREFIXES = (
    "SERVER_",
    "SAM3_",
    "IMAGE_MODEL_",
    "VIDEO_",
    "MAX_",
    "RATE_LIMIT_",
    "OUTPUT_",
    "ENABLE_",
    "METRICS_",
    "CORS_",
    "SESSION_",
    "FEATURE_CACHE_",
    "WS_",
)
_CONFIG_NAMES = {
    "REQUIRE_API_KEY",
    "API_KEYS",
    "UPLOAD_DIR",
    "LOG_LEVEL",
    "RELOAD",
    "TRUST_PROXY_HOPS",
}
#: Requests per minute of the degraded server (test_degraded_server counts on it).
DEGRADED_RATE_LIMIT = 3
#: Frames of the long clip: a propagation over it is still running when a test looks.
LONG_CLIP_FRAMES = 100
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


# --- the bundle ----------------------------------------------------------------------------


def exporter_fingerprint() -> str:
    """test/helpers/server.ts exporterFingerprint, byte for byte."""
    files: list[str] = []

    def walk(directory: Path) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in ("__pycache__", "tests"):
                        walk(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and entry.name.endswith(".py"):
                    files.append(entry.path)

    walk(REPO / "tools")
    digest = hashlib.sha256()
    for file in sorted(files) + [str(REPO / ".venv" / "pyvenv.cfg")]:
        digest.update(os.path.relpath(file, REPO).encode())
        digest.update(b"\0")
        digest.update(Path(file).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def tiny_bundle_dir() -> Path:
    """The cached tiny bundle (preset tiny, seed 0), exported first when there is none."""
    override = os.environ.get("SAM3_TEST_BUNDLE")
    if override:
        return Path(override)
    root = Path(tempfile.gettempdir()) / "sam3-test-bundles"
    target = root / f"tiny-0-{exporter_fingerprint()}"
    if (target / "manifest.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.staging-", dir=root))
    try:
        command = [
            str(VENV_PYTHON),
            str(REPO / "tools" / "export_sam3.py"),
            "--tiny-random",
            "--preset",
            "tiny",
            "--seed",
            "0",
            "--out",
            str(staging),
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"bundle export failed ({done.returncode}):\n{done.stderr[-4000:]}")
        try:
            os.rename(staging, target)
        except OSError:
            # Another test process got there first.
            if not (target / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerExited(Exception):
    """The server process ended before it was ready (the message has its log's tail)."""


class ServerProcess:
    """One ``node dist/src/main.js`` child process on a free loopback port."""

    def __init__(self, name: str, workdir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.workdir = workdir
        self.upload_dir = workdir / "uploads"
        self.output_dir = workdir / "outputs"
        workdir.mkdir(parents=True, exist_ok=True)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = workdir / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        child_env = {
            key: value
            for key, value in os.environ.items()
            if key not in _CONFIG_NAMES and not key.startswith(_CONFIG_PREFIXES)
        }
        child_env.update(
            {
                "SERVER_HOST": "127.0.0.1",
                "SERVER_PORT": str(self.port),
                "UPLOAD_DIR": str(self.upload_dir),
                "OUTPUT_DIR": str(self.output_dir),
                "LOG_LEVEL": "INFO",
            }
        )
        child_env.update(env)
        self._log = self.log_file.open("wb")
        # cwd: the server reads a .env from its working directory; the repo's must not count.
        self.process = subprocess.Popen(
            ["node", str(SERVER_MAIN)],
            cwd=workdir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_file.read_text(errors="replace")[-chars:]

    def wait_ready(self, statuses: tuple[str, ...] = ("ok",)) -> None:
        """Waits until GET /health reports one of ``statuses``; fails if the server dies."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise ServerExited(
                    f"the {self.name} server exited with {code} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                response = httpx.get(f"{self.url}/health", timeout=2.0)
                status = response.json().get("status")
                if status in statuses:
                    return
                last = f"{response.status_code} {status}"
            except (httpx.HTTPError, ValueError) as error:
                last = repr(error)
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the {self.name} server was not ready in time ({last}):\n{self.log_tail()}")

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"the {self.name} server died ({code}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_server(
    name: str,
    workdir: Path,
    env: Mapping[str, str],
    statuses: tuple[str, ...] = ("ok",),
) -> ServerProcess:
    """Starts a server and waits until /health reports one of ``statuses``."""
    if not SERVER_MAIN.exists():
        pytest.fail(f"{SERVER_MAIN} is missing: build the server first (npm run build:ts)")
    for attempt in range(3):
        server = ServerProcess(name, workdir / f"try-{attempt}", env)
        try:
            server.wait_ready(statuses)
            return server
        except ServerExited as exited:
            # Another process took the free port before the server bound it: try another.
            if "EADDRINUSE" not in str(exited) or attempt == 2:
                pytest.fail(str(exited))
    raise AssertionError("unreachable")


# --- inputs --------------------------------------------------------------------------------


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """An RGB PNG of deterministic pixels (written here: no imaging library needed)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((x * 7 + seed) % 256, (y * 13 + seed * 3) % 256, ((x ^ y) * 5) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


def write_clip(out: Path, frames: int = 6) -> Path:
    """A lossless 64x48 video at 10 fps (FFV1 in Matroska), written with ffmpeg."""
    ffmpeg = shutil.which(os.environ.get("FFMPEG_PATH", "ffmpeg"))
    if ffmpeg is None:
        pytest.fail("ffmpeg is required (the server decodes videos with it)")
    lavfi = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"]
    encode = ["-frames:v", str(frames), "-c:v", "ffv1"]
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", *lavfi, *encode, str(out)], check=True)
    return out
