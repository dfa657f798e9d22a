"""The pages in a real browser: Chromium from Debian's packages driven by Playwright (its own browser download cannot
work offline), at 1280 px. Swagger UI: loads with nothing from outside this host, authorizes with a key and uploads
a model through its form; one report page of each kind, as served: no console errors, no request leaving the host,
nothing wider than its container, no chart label over another. Screenshots go to the folder the test prints
($ONNXSMITH_SCREENSHOTS, else .artifacts/screenshots in the checkout)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from engine.examples import write_examples

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no Chromium (apt-get install chromium); CI installs it"
)
SHOTS = Path(
    os.environ.get("ONNXSMITH_SCREENSHOTS") or Path(__file__).resolve().parents[2] / ".artifacts" / "screenshots"
)

# Elements wider than their section, and chart texts drawn over one another (the rotated axis title included).
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  for (const s of document.querySelectorAll('section, header, footer')) {
    const name = (s.querySelector('h2,h3') || s).textContent.trim().slice(0, 40);
    if (s.scrollWidth > s.clientWidth + 1) {
      problems.push(`${s.tagName} "${name}" is ${s.scrollWidth}px wide in ${s.clientWidth}px`);
    }
  }
  const page = document.documentElement.scrollWidth;
  if (page > window.innerWidth + 1) problems.push(`the page is ${page}px wide`);
  for (const svg of document.querySelectorAll('svg.chart')) {
    const texts = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()]);
    for (let i = 0; i < texts.length; i++) {
      for (let j = i + 1; j < texts.length; j++) {
        const [a, ra] = texts[i], [b, rb] = texts[j];
        const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
        const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
        if (w > 1 && h > 1) problems.push(`chart "${svg.getAttribute('aria-label')}": "${a}" overlaps "${b}"`);
      }
    }
  }
  return problems;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is missing: apt-get install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SHOTS}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Watched:
    """A page that records console errors, page errors and every request's host."""

    def __init__(self, browser, base_url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.outside: list[str] = []
        here = urlsplit(base_url).netloc
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "request",
            lambda r: (
                self.outside.append(r.url)
                if urlsplit(r.url).scheme in ("http", "https") and urlsplit(r.url).netloc != here
                else None
            ),
        )

    def check(self, what: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{what}.png"), full_page=True)
        assert not self.errors, f"{what}: console errors {self.errors}"
        assert not self.outside, f"{what}: requests leaving the host {self.outside}"


def test_swagger_ui_authorizes_and_uploads_a_model_offline(browser, server, tmp_path) -> None:
    url, key = server
    model = write_examples(tmp_path, epochs=1).files["classifier.onnx"]
    w = Watched(browser, url)
    page = w.page
    page.goto(f"{url}/docs", wait_until="networkidle")
    page.locator(".auth-wrapper button.authorize").click()
    page.locator(".dialog-ux .auth-container input").first.fill(key)
    page.locator(".dialog-ux button.modal-btn.authorize").click()
    page.locator(".dialog-ux button.btn-done").click()
    upload = page.locator("#operations-models-upload_model_v1_models_post")
    upload.locator(".opblock-summary").click()
    upload.get_by_role("button", name="Try it out").click()
    upload.locator('input[type="file"]').first.set_input_files(str(model))  # then the data parts' pickers
    upload.locator(".opblock-body").screenshot(path=str(SHOTS / "swagger-upload-form.png"))
    upload.get_by_role("button", name="Execute").click()
    page.wait_for_selector("#operations-models-upload_model_v1_models_post .live-responses-table tr.response")
    status = upload.locator(".live-responses-table tr.response .response-col_status").first.inner_text().strip()
    w.check("swagger-upload")
    assert status in ("201", "200"), status
    made = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["items"]
    assert [m["name"] for m in made] == ["classifier"], "the form sent a placeholder (a model named 'string'?)"


def test_one_report_page_of_each_kind(browser, server, tmp_path) -> None:
    from onnxsmith import Client

    url, key = server
    files = write_examples(tmp_path, epochs=3).files
    with Client(url, key) as c:
        model = c.upload_model(files["digits_mlp.onnx"])
        ds = {n: c.upload_dataset(files[f"{n}.npz"], name=n).id for n in ("train", "val", "test")}
        history = c.upload_dataset(files["history.json"], name="history", kind="history").id
        small = {"runs": 5}
        jobs = {
            "evaluate": ({"eval": ds["test"]}, {}),
            "benchmark": ({}, {**small, "batch_sizes": [1, 8]}),
            "quantize": ({"eval": ds["test"], "calibration": ds["train"]}, {"mode": "dynamic", **small}),
            "prune": ({"eval": ds["test"]}, {"method": "structured", "ratio": 0.3, **small}),
            "diagnose": ({"train": ds["train"], "validation": ds["val"], "history": history}, {}),
            "optimize": ({"eval": ds["test"]}, {"methods": ["simplify", "quantize"], **small}),
        }
        if importlib.util.find_spec("torch") is not None:  # the train extra (CI has it)
            jobs["distill"] = ({"train": ds["train"], "validation": ds["val"], "eval": ds["test"]}, {"epochs": 2})
            jobs["diagnose"] = (jobs["diagnose"][0], {"learning_curve": True, "learning_curve_search_epochs": 10})
        submitted = {kind: c.submit(kind, model, datasets=d, params=p) for kind, (d, p) in jobs.items()}
        quantized = submitted["quantize"].wait(timeout=300)
        compare = c.submit(
            "compare",
            model,
            datasets={"eval": ds["test"]},
            params={"other_model_id": quantized.report().output_model_id, **small},
        )
        submitted["compare"] = compare
        # auto with a goal nothing meets: the page of a job that kept the original (its banner, the best attempt)
        kept = {"mode": "auto", "max_trials": 2, "min_output_cosine": 1.0, "trial_runs": 5, **small}
        submitted["quantize-auto"] = c.submit("quantize", model, datasets=jobs["quantize"][0], params=kept)
        done = {kind: job.wait(timeout=300) for kind, job in submitted.items()}
    for kind, state in done.items():
        assert state.status == "succeeded", (kind, state)
        report_url = httpx.get(f"{url}/v1/jobs/{state.id}", headers={"Authorization": f"Bearer {key}"}).json()[
            "report_url"
        ]
        w = Watched(browser, url)
        w.page.goto(report_url, wait_until="networkidle")
        assert w.page.locator("h1").first.inner_text().strip()
        problems = w.page.evaluate(LAYOUT_PROBLEMS)
        words = w.page.locator("main").inner_text()
        raw = [m for m in ("True", "False", "None", "undefined", "NaN") if f" {m}" in words or f"{m};" in words]
        problems += [f"raw value {m!r} in the text" for m in raw]
        w.check(f"report-{kind}")
        assert not problems, f"{kind}: {problems}"
        if kind == "diagnose" and importlib.util.find_spec("torch") is not None:
            assert "Data-size learning curve" in words and "not the uploaded weights" in words
            assert w.page.locator('svg[aria-label^="accuracy by training samples"] circle').count() == 8
        w.page.close()
