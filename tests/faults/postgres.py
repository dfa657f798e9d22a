"""A PostgreSQL cluster of the test's own (initdb in a temporary folder, its own port), to stop and start at will:
fault tests never touch the machine's shared PostgreSQL."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed")
    return str(found[-1])


class Cluster:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.data = folder / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            shutil.chown(folder, "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @classmethod
    @contextlib.contextmanager
    def temporary(cls, port: int) -> Iterator[Cluster]:
        """A started cluster in a fresh folder under the system's temp folder (the postgres user must reach it, so
        not under pytest's private one), stopped and removed afterwards."""
        folder = Path(tempfile.mkdtemp(prefix="onnxsmith-pg-"))
        try:
            cluster = cls(folder, port)
            cluster.start()
            cluster.wait_ready()
            yield cluster
        finally:
            with contextlib.suppress(Exception):  # already stopped by the test
                cluster.stop()
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "-t",
                  "60", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop")

    def ready(self) -> bool:
        probe = [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0

    def start_if_stopped(self) -> None:
        """Back up after a test that stopped it (and failed before restarting it)."""
        if not self.ready():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.start()
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the test cluster on port {self.port} did not come up in {timeout:g} s")
