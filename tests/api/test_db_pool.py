"""The API's connection pool checks a connection only after it sat idle (service.db.make_engine's
ping_after_idle_s): no round trip per request under load, and a connection that died while idle (a database
restart, an idle timeout) is replaced instead of failing the request."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from service.db import make_engine


def _kill_pooled_connection(url: str, engine: sa.Engine) -> None:
    with engine.connect() as c:
        pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    with make_engine(url).connect() as admin:  # the pooled one is idle now: end it from outside
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()
    time.sleep(0.1)


def test_an_idle_connection_that_died_is_replaced_before_use(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_after_idle_s=0.0)
    try:
        _kill_pooled_connection(pg_url, engine)
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url: str) -> None:
    """The other side of the same rule: within the idle time no check is made, so a connection killed meanwhile
    fails its next use (and the pool then replaces it: the use after works)."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_after_idle_s=3600.0)
    try:
        _kill_pooled_connection(pg_url, engine)
        with pytest.raises(OperationalError), engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
