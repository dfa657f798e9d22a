import time

import pytest

from engine.errors import EngineError
from engine.sandbox import Limits, run_isolated


def test_value_comes_back_with_peak_rss() -> None:
    result = run_isolated("tests.sandbox_targets:echo", {"value": [1, "two"]}, Limits())
    assert result.value == {"echo": [1, "two"]}
    assert result.peak_rss_kb > 1000


def test_a_crash_fails_only_the_call() -> None:
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:abort", {}, Limits())
    assert info.value.code == "crashed"
    assert "SIGABRT" in info.value.detail


def test_exit_without_result_is_a_crash() -> None:
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:exit_hard", {"code": 3}, Limits())
    assert info.value.code == "crashed"


def test_time_limit_kills_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:sleep", {"seconds": 30}, Limits(timeout_s=1.0))
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 10


def test_memory_limit_is_enforced() -> None:
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:allocate", {"megabytes": 2048}, Limits(memory_mb=512))
    assert info.value.code == "memory_limit"
    # the same allocation fits under a larger limit: the limit, not the allocation, refused it
    assert run_isolated("tests.sandbox_targets:allocate", {"megabytes": 256}, Limits(memory_mb=2048)).value
