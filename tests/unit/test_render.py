from engine.registry import render_report
from engine.render import _fmt, heatmap, line_chart

JOB = {"id": "job_x", "kind": "benchmark", "model_id": "mdl_x", "status": "succeeded", "finished_at": "now"}


def test_numbers_are_readable() -> None:
    assert _fmt(45960.3) == "45,960" and _fmt(0.82751) == "0.8275" and _fmt(0.00001234) == "1.234e-05"
    assert _fmt(None) == "—" and _fmt(3) == "3" and _fmt(0.0) == "0"


def test_svg_escapes_text() -> None:
    svg = str(line_chart({"<script>": [(1, 2.0), (2, 3.0)]}, x_label="a&b", y_label="y"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a&amp;b" in svg
    assert str(heatmap([[1, 0], [2, 5]], row_label="true", col_label="pred")).count("<rect") == 4


def test_unknown_kind_falls_back_to_the_json(tmp_path) -> None:
    page = render_report(
        {"kind": "mystery", "schema_version": 1, "warnings": ["careful <b>"], "x": 1}, dict(JOB, kind="mystery")
    )
    assert "careful &lt;b&gt;" in page
    assert "&#34;x&#34;: 1" in page or "&quot;x&quot;: 1" in page


def test_quantize_page_charts() -> None:
    from engine.render import bars

    svg = str(bars([("conv0/<x>", 20.5), ("fc", 40.0)], value_label="SQNR"))
    assert svg.count("<rect") == 2 and "&lt;x&gt;" in svg and "<x>" not in svg
    assert str(bars([], value_label="x")) == ""


def test_auto_quantize_page_shows_every_trial_and_the_front() -> None:
    from engine.render import scatter

    trial = {"status": "measured", "error": None, "refines": None, "non_finite_values": 0, "seconds": 1.0}
    trials = [
        dict(trial, index=0, name="dynamic <int8>", metric=0.97, drop=0.01, cosine=0.999, speedup=1.5,
             size_ratio=0.27, meets_goal=True, pareto=True),
        dict(trial, index=1, name="static U8S8", metric=0.90, drop=0.08, cosine=0.99, speedup=2.0,
             size_ratio=0.26, meets_goal=False, pareto=True),
        dict(trial, index=2, name="fp16", metric=0.97, drop=0.0, cosine=1.0, speedup=0.9, size_ratio=0.5,
             meets_goal=True, pareto=False),
        dict(trial, index=3, name="static U8S8, 1 node(s) in float", status="failed", error="boom", metric=None,
             drop=None, cosine=None, speedup=None, size_ratio=None, meets_goal=False, pareto=False, refines=1),
    ]  # fmt: skip
    comparison = {
        "size_bytes": {"original": 100, "candidate": 27, "ratio": 0.27},
        "latency_ms": [],
        "metrics": None,
        "fidelity": [],
        "eval_samples": 10,
    }
    report = {
        "kind": "quantize", "schema_version": 1, "warnings": [], "mode": "dynamic", "requested_mode": "auto",
        "usable": True, "config": {}, "comparison": comparison, "quantization_seconds": 1.0, "left_in_float": [],
        "auto": {"goal": "accuracy drops by at most 0.01", "goal_metric": "accuracy", "original_metric": 0.98,
                 "objective": "latency", "trials": trials, "chosen": 0, "goal_met": True,
                 "stopped_because": "every candidate was tried", "skipped": ["x: y"],
                 "timed_at": {"batch_size": 1, "threads": 1}},
    }  # fmt: skip
    page = render_report(report, dict(JOB, kind="quantize"))
    assert "Quantization: auto, chose dynamic" in page and "4 trials, goal met" in page
    assert "dynamic &lt;int8&gt;" in page and "boom" in page and "repairs #1" in page
    assert page.count('class="chosen"') == 1
    assert "at batch 1 with 1 thread(s)" in page
    svg = str(scatter([{"x": 1.0, "y": 0.9, "label": "a", "front": True, "chosen": True}], x_label="x", y_label="y"))
    assert svg.count("<circle") == 4  # the point, its ring, and the two legend marks


def test_axis_ticks_share_one_readable_si_format() -> None:
    """Ticks mixed `0.0134` and `8.92e-03` on one axis, and long labels ran into the axis title."""
    from engine.render import axis_ticks

    assert axis_ticks([0, 0.00446, 0.00892, 0.01338, 0.01784]) == ["0", "4.5m", "8.9m", "13.4m", "17.8m"]
    assert axis_ticks([0, 250, 500, 750, 1000]) == ["0", "250", "500", "750", "1000"]
    assert axis_ticks([0, 2500, 5000, 7500, 10000]) == ["0", "2.5k", "5.0k", "7.5k", "10.0k"]
    assert axis_ticks([0.95, 0.9625, 0.975, 0.9875, 1.0]) == ["0.950", "0.963", "0.975", "0.988", "1.000"]
    assert axis_ticks([-0.2, -0.1, 0.0, 0.1, 0.2]) == ["-0.2", "-0.1", "0", "0.1", "0.2"]
    assert axis_ticks([0, 0, 0]) == ["0", "0", "0"]
    for labels in (axis_ticks([1e-7 * i for i in range(5)]), axis_ticks([3.3e6 * i for i in range(5)])):
        assert all(len(label) <= 6 for label in labels), labels  # short enough to clear the axis title
