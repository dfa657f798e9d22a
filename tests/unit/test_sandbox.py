import time

import pytest

from engine.core.errors import EngineError
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


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_both_launchers_share_the_protocol(warm: bool) -> None:
    seen = []
    result = run_isolated(
        "tests.sandbox_targets:progress",
        {"steps": 3},
        Limits(),
        monitor=lambda m: seen.append(m) or True,
        poll_s=0.05,
        warm=warm,
    )
    assert result.value == {"done": 3}
    assert [m for m in seen if m] == [{"progress": i / 3, "stage": f"step {i}"} for i in range(1, 4)]
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:abort", {}, Limits(), warm=warm)
    assert info.value.code == "crashed"
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:allocate", {"megabytes": 4096}, Limits(memory_mb=2048), warm=warm)
    assert info.value.code == "memory_limit"


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_monitor_can_stop_the_child(warm: bool) -> None:
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        run_isolated(
            "tests.sandbox_targets:sleep", {"seconds": 30}, Limits(), monitor=lambda m: False, poll_s=0.1, warm=warm
        )
    assert info.value.code == "cancelled" and time.monotonic() - started < 10


def test_warm_children_run_multithreaded_sessions() -> None:
    """The forkserver set ONNX Runtime up before forking; sessions with thread pools must still work after."""
    for threads in (1, 2):
        result = run_isolated("tests.sandbox_targets:session", {"threads": threads}, Limits(threads=threads), warm=True)
        assert result.value == {"shape": [64, 10]}


@pytest.mark.parametrize("warm", [False, True])
def test_a_bug_in_the_child_is_internal_with_its_traceback_for_the_log(warm: bool) -> None:
    with pytest.raises(EngineError) as info:
        run_isolated("tests.sandbox_targets:buggy", {}, Limits(), warm=warm)
    assert info.value.code == "internal" and "KeyError" in info.value.detail
    assert info.value.traceback and "Traceback" in info.value.traceback and "buggy" in info.value.traceback


def test_allocation_failures_that_are_not_memory_errors_are_the_memory_limit() -> None:
    """Under the child's address-space limit protobuf's serializer fails with a bare EncodeError and ONNX Runtime
    with bad_alloc in its own exception: both are the memory limit, not an internal error (bench/whole_bundle.py
    with ONNXSMITH_JOB_MEMORY_MB=3000 showed `internal: EncodeError` before)."""
    from google.protobuf.message import DecodeError, EncodeError

    from engine.sandbox import out_of_memory

    assert out_of_memory(EncodeError("Failed to serialize proto"))
    assert out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : std::bad_alloc"))
    assert out_of_memory(DecodeError("Error parsing message with type 'onnx.ModelProto': Arena alloc failed"))
    assert not out_of_memory(EncodeError("Message onnx.ModelProto is missing required fields"))
    assert not out_of_memory(ValueError("Failed to serialize: too large"))
