"""Signed, short-lived links to a job's HTML report: a browser link cannot carry a Bearer header."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

from service.settings import Settings


def secret_key(settings: Settings) -> bytes:
    """ONNXSMITH_SECRET_KEY, else a random key kept in the data folder (fine for one machine; set the variable
    when several machines serve the API, or links signed by one are refused by another)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.resolved_data_dir / "secret.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier, or just now by another process
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    for _ in range(50):  # another process may be between creating and writing it
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty")


def _signature(key: bytes, job_id: str, tenant_id: str, expires: int) -> str:
    return hmac.new(key, f"report:{job_id}:{tenant_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def make_token(key: bytes, job_id: str, tenant_id: str, ttl_s: int, now: float | None = None) -> str:
    expires = int((now or time.time()) + ttl_s)
    return f"{expires}.{_signature(key, job_id, tenant_id, expires)}"


def check_token(key: bytes, job_id: str, tenant_id: str, token: str, now: float | None = None) -> bool:
    expires_s, _, sig = token.partition(".")
    if not (expires_s.isascii() and expires_s.isdigit()) or int(expires_s) < (now or time.time()):  # "²" isdigit
        return False
    return hmac.compare_digest(sig, _signature(key, job_id, tenant_id, int(expires_s)))
