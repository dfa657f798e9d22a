"""A Docker engine of the deployment test's own (never the machine's): dockerd with its own data root (kept between
runs, so images and the build cache survive), exec root, socket and pid file; and docker compose against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("ONNXSMITH_DEPLOY_CACHE", Path.home() / ".cache" / "onnxsmith-deploy"))


class Unavailable(Exception):  # noqa: N818
    """Why this machine cannot run the engine (the test skips, printing it)."""


class Engine:
    def __init__(self, cache: Path = CACHE) -> None:
        self.cache = cache
        self.run_dir = Path(tempfile.mkdtemp(prefix="osd-", dir="/tmp"))  # short: socket paths are limited
        self.socket = self.run_dir / "docker.sock"
        self.pidfile = cache / "dockerd.pid"  # beside the data root: an engine left by a killed run is found
        self.log = self.run_dir / "dockerd.log"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        if os.geteuid() != 0:
            raise Unavailable("dockerd needs root and the tests do not run as root")
        for tool, package in (("dockerd", "docker.io"), ("docker", "docker.io")):
            if shutil.which(tool) is None:
                raise Unavailable(f"no {tool} on this machine (Debian package {package})")
        self.cache.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(self.cache / "docker-root"),
                    "--exec-root",
                    str(self.run_dir / "exec"),
                    "--pidfile",
                    str(self.pidfile),
                    "-H",
                    f"unix://{self.socket}",
                    # no docker0 (a machine's own engine may have one); compose makes its own networks, and the
                    # engine's iptables rules let them through a FORWARD policy of DROP
                    "--bridge",
                    "none",
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"dockerd exited ({self.proc.returncode}): {self.log_tail()}")
            if self.docker("info", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.5)
        self.stop()
        raise Unavailable(f"dockerd did not answer within {timeout:.0f} s: {self.log_tail()}")

    def _stop_leftover(self) -> None:
        """An engine of an earlier run that was killed before it stopped its engine holds the data root: stop it."""
        try:
            pid = int(self.pidfile.read_text())
            ours = str(self.cache / "docker-root") in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except (OSError, ValueError):
            ours = False
        if not ours:  # gone, or the pid now another process's
            self.pidfile.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def log_tail(self, n: int = 8) -> str:
        return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])

    def docker(self, *args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw)
        if check and run.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        return run

    def clean(self) -> None:
        """Containers, networks and volumes of earlier runs (the engine is the test's own), dangling images."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids)
        self.docker("network", "prune", "-f")
        self.docker("volume", "prune", "-f")
        self.docker("image", "prune", "-f")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for mount in _mounts_under(self.run_dir):  # dockerd leaves its network namespace file mounted
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _mounts_under(folder: Path) -> list[str]:
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p.startswith(f"{folder}/")), reverse=True)


class Compose:
    """docker compose (v2) where the plugin is installed, else docker-compose 1.29: the files are valid for both."""

    def __init__(self, engine: Engine, root: Path, project: str, env: dict[str, str]) -> None:
        self.engine, self.root = engine, root
        self.env = {**engine.env, **env}
        v2 = subprocess.run(["docker", "compose", "version"], env=self.env, capture_output=True, timeout=30)
        if v2.returncode == 0:
            self.base = ["docker", "compose"]
        elif shutil.which("docker-compose"):
            self.base = ["docker-compose"]
        else:
            raise Unavailable("neither the docker compose plugin nor docker-compose is installed")
        self.base += ["-p", project, "-f", "docker-compose.yml", "-f", "docker-compose.ci.yml"]

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [*self.base, *args], env=self.env, cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        if check and run.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        return run

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service).stdout.split()
