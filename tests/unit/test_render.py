from engine.render import _fmt, heatmap, line_chart, render_report

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
