"""The registry of job kinds: the one place that imports them. Adding a kind: its folder under engine/kinds/ and
one line below (workers register a Celery task per kind, the API and /v1/kinds list it, from here).
"""

from __future__ import annotations

from typing import Any

from engine.core.inputs import JobInputs, resolve_roles
from engine.core.kind import AnyKind, JobOutput, Progress
from engine.kinds import benchmark, compare, diagnose, distill, evaluate, optimize, prune, quantize

KINDS: dict[str, AnyKind] = {
    k.name: k
    for k in (
        evaluate.KIND,
        benchmark.KIND,
        compare.KIND,
        quantize.KIND,
        diagnose.KIND,
        prune.KIND,
        distill.KIND,
        optimize.KIND,
    )
}


def get_kind(name: str) -> AnyKind:
    """The kind called `name`; KeyError for an unknown one."""
    return KINDS[name]


def kind_names() -> list[str]:
    return sorted(KINDS)


def roles_for(kind: AnyKind, given: dict[str, str]) -> dict[str, str]:
    return resolve_roles(kind.name, kind.roles, kind.required, given)


def execute(kind: str, inputs: JobInputs, params: dict[str, Any], progress: Progress) -> JobOutput:
    """Run a kind in this process: params validated, the run set up by Kind.execute, the report as JSON."""
    job_kind = get_kind(kind)
    outcome = job_kind.execute(inputs, job_kind.Params.model_validate(params), progress, get_kind)
    return JobOutput(report=outcome.report.model_dump(mode="json"), artifacts=outcome.artifacts)


def render_report(report: dict[str, Any], job: dict[str, Any]) -> str:
    """A job's report as an HTML page, by its kind (an unknown kind gets the generic page)."""
    kind = KINDS.get(str(report.get("kind", job.get("kind"))))
    if kind is None:
        from engine.render import render_page

        return render_page(report, job, folder=None, template=None, charts={})
    return kind.render(report, job)


def run_in_child(kind: str, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Sandbox entry point of every job: validate, run, return {"report", "artifacts"} as JSON."""
    from engine.sandbox import report_progress

    return execute(kind, JobInputs.model_validate(inputs), params, report_progress).model_dump(mode="json")
