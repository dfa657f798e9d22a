"""A Redis server of the test's own (its own port and folder, no persistence: a restart loses every message, the
worst case), to stop and start at will: fault tests never touch the machine's shared Redis."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


class RedisServer:
    def __init__(self, folder: Path, port: int) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.folder, self.port = folder, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    @contextlib.contextmanager
    def temporary(cls, folder: Path, port: int) -> Iterator[RedisServer]:
        server = cls(folder, port)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the test's Redis on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
