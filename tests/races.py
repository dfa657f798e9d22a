"""Two transactions doing the same thing at once, deterministically: the first does it and holds its
transaction open; the second starts in a thread (and waits on the first's row lock or unique index); the first
commits; the second finishes. Every wait has a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from service.db import make_engine, make_session_factory


def race(database_url: str, act: Callable[[Any], Any], *, hold_s: float = 0.5, deadline_s: float = 60) -> tuple:
    """(first's result, second's result) of `act(session)` run in two overlapping transactions."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    first, second = sessions(), sessions()
    result: dict[str, Any] = {}
    try:
        first.begin()
        mine = act(first)

        def concurrently() -> None:
            with second.begin():
                result["second"] = act(second)

        racer = threading.Thread(target=concurrently)
        racer.start()
        time.sleep(hold_s)  # the racer now waits on the first transaction's rows
        first.commit()
        racer.join(timeout=deadline_s)
        assert not racer.is_alive(), f"the second transaction did not finish within {deadline_s:g} s"
        assert "second" in result, "the second transaction failed"
        return mine, result["second"]
    finally:
        first.close()
        second.close()
        engine.dispose()
