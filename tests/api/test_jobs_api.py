"""Job submission rules (no worker needed: every case is decided before or without running)."""

from __future__ import annotations

import numpy as np
import pytest

from tests import data_files, onnx_models
from tests.conftest import count_rows


def _model(client, auth, path):
    with open(path, "rb") as f:
        return client.post("/v1/models", headers=auth, files={"file": (path.name, f)}).json()["id"]


def _dataset(client, auth, path, **fields):
    with open(path, "rb") as f:
        r = client.post("/v1/datasets", headers=auth, files={"file": (path.name, f)}, data=fields or None)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def setup(client, auth, tmp_path):
    x, y = data_files.classification(n=20, features=64)
    return {
        "model": _model(client, auth, onnx_models.mlp(tmp_path / "m.onnx")),
        "labeled": _dataset(client, auth, data_files.npz(tmp_path / "l.npz", x=x, y=y)),
        "unlabeled": _dataset(client, auth, data_files.npz(tmp_path / "u.npz", x=x)),
        "narrow": _dataset(client, auth, data_files.npz(tmp_path / "n.npz", x=x[:, :10], y=y)),
        "strings": _dataset(client, auth, data_files.npz(tmp_path / "s.npz", x=np.full((20, 64), "a"), y=y)),
        "history": _dataset(client, auth, data_files.keras_history(tmp_path / "h.json")),
    }


@pytest.mark.sqlite
def test_bad_job_requests(client, auth, other_auth, setup, tmp_path, db) -> None:
    m = setup["model"]
    other_ds = _dataset(client, other_auth, data_files.npz(tmp_path / "o.npz", x=np.ones((3, 64)), y=np.ones(3, int)))
    cases = [
        ({"kind": "explode", "model_id": m}, 422, "unknown-job-kind", "evaluate"),
        (
            {
                "kind": "evaluate",
                "model_id": m,
                "datasets": {"eval": setup["labeled"]},
                "params": {"batch_size": "big"},
            },
            422,
            "validation-error",
            "params.batch_size",
        ),
        (
            {"kind": "evaluate", "model_id": m, "datasets": {"eval": setup["labeled"]}, "params": {"bogus": 1}},
            422,
            "validation-error",
            "params.bogus",
        ),
        ({"kind": "evaluate", "model_id": m, "datasets": {"eval": setup["narrow"]}}, 422, "incompatible-data", "dim 1"),
        ({"kind": "evaluate", "model_id": m, "datasets": {"eval": setup["strings"]}}, 422, "incompatible-data", "<U1"),
        (
            {"kind": "evaluate", "model_id": m, "datasets": {"eval": setup["unlabeled"]}},
            422,
            "incompatible-data",
            "labeled",
        ),
        (
            {"kind": "evaluate", "model_id": m, "datasets": {"eval": setup["history"]}},
            422,
            "incompatible-data",
            "history",
        ),
        ({"kind": "evaluate", "model_id": m}, 422, "missing-dataset", "'test' or 'validation' stand in for 'eval'"),
        ({"kind": "evaluate", "model_id": m, "datasets": {"eval": other_ds}}, 404, "not-found", other_ds),
        (
            {"kind": "evaluate", "model_id": "mdl_01m8n0k5rywv9byptk738d4r00", "datasets": {"eval": setup["labeled"]}},
            404,
            "not-found",
            "model",
        ),
        (
            {"kind": "evaluate", "model_id": m, "datasets": {"holdout": setup["labeled"]}},
            422,
            "validation-error",
            "holdout",
        ),
        (
            {"kind": "evaluate", "model_id": m, "datasets": {"eval": setup["labeled"]}, "params": {"output": "nope"}},
            422,
            "unknown-output",
            "nope",
        ),
        ({"kind": "benchmark", "model_id": m, "params": {"threads": [64]}}, 422, "validation-error", "threads"),
        ({"kind": "benchmark", "model_id": m, "params": {"batch_sizes": []}}, 422, "validation-error", "batch_sizes"),
        ({"kind": "benchmark", "model_id": m, "extra": 1}, 422, "validation-error", "extra"),
        (  # another kind's param: the refusal lists the kind's own
            {"kind": "benchmark", "model_id": m, "params": {"mode": "dynamic"}},
            422,
            "validation-error",
            "params.mode: not a parameter of benchmark; its parameters: batch_sizes, threads",
        ),
        ({"model_id": m}, 422, "validation-error", "kind"),
    ]
    for body, status, type_, words in cases:
        r = client.post("/v1/jobs", headers=auth, json=body)
        assert r.status_code == status, (body, r.text)
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["type"].endswith("/" + type_), (body, problem)
        assert words in problem["detail"], (body, problem)
    assert count_rows(db, "jobs") == 0
    r = client.post(
        "/v1/jobs",
        headers=auth,
        content=b"{not json",
    )
    assert r.status_code == 422


def test_symbolic_dims_need_values_for_synthetic_inputs(client, auth, tmp_path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "seq.onnx"
    path.write_bytes(model.SerializeToString())
    m = _model(client, auth, path)
    r = client.post("/v1/jobs", headers=auth, json={"kind": "benchmark", "model_id": m})
    assert r.status_code == 422 and r.json()["type"].endswith("/missing-param") and "'seq'" in r.json()["detail"]
    ok = client.post(
        "/v1/jobs", headers=auth, json={"kind": "benchmark", "model_id": m, "params": {"dim_values": {"seq": 16}}}
    )
    assert ok.status_code == 202, ok.text
    # a 100-byte model and a request for a 32768 x 32768 x 8 input: refused by arithmetic, nothing allocated (the API
    # built the tensor here and took 12.5 GB); and dimensions beyond 2^31 are a field error, not a 500
    huge = {"kind": "benchmark", "model_id": m, "params": {"dim_values": {"seq": 32768}, "batch_sizes": [4096]}}
    r = client.post("/v1/jobs", headers=auth, json=huge)
    assert r.status_code == 422 and r.json()["type"].endswith("/input-too-large"), r.text
    assert "x" in r.json()["detail"] and r.json()["code"] == "input_too_large"
    r = client.post("/v1/jobs", headers=auth, json={**huge, "params": {"dim_values": {"seq": 2**40}}})
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error") and "dim_values" in r.text


@pytest.mark.sqlite
def test_idempotency_key(client, auth, setup) -> None:
    body = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
    first = client.post("/v1/jobs", headers=auth | {"Idempotency-Key": "k1"}, json=body)
    again = client.post("/v1/jobs", headers=auth | {"Idempotency-Key": "k1"}, json=body)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert first.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    other = client.post("/v1/jobs", headers=auth | {"Idempotency-Key": "k1"}, json=body | {"params": {"threads": 2}})
    assert other.status_code == 409 and other.json()["job_id"] == first.json()["id"]
    assert client.post("/v1/jobs", headers=auth, json=body).json()["id"] != first.json()["id"]


def test_queued_job_state_rules(client, auth, other_auth, setup) -> None:
    body = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"validation": setup["labeled"]}}
    job = client.post("/v1/jobs", headers=auth, json=body).json()
    assert job["status"] == "queued" and job["datasets"]["eval"] == setup["labeled"]
    assert job["params"] == {"output": None, "batch_size": 256, "threads": 1, "max_samples": None}
    r = client.get(f"/v1/jobs/{job['id']}/report", headers=auth)
    assert r.status_code == 409 and r.json()["job_status"] == "queued" and r.json()["status"] == 409
    for path in ("", "/report", "/artifacts"):
        assert client.get(f"/v1/jobs/{job['id']}{path}", headers=other_auth).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=other_auth).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json() == []
    assert client.get("/v1/artifacts/art_01m8n0k5rywv9byptk738d4r00/content", headers=auth).status_code == 404


def test_job_needing_a_capability_no_live_worker_has_is_refused(client, auth, setup, db) -> None:
    """distill needs PyTorch: refused at submit when the live workers on its queue all lack it (worker rows)."""
    from datetime import timedelta

    import sqlalchemy as sa

    from service.db import utcnow
    from service.fleet import repository as fleet
    from service.fleet.tables import WorkerPresence

    body = {
        "kind": "distill",
        "model_id": setup["model"],
        "datasets": {"train": setup["labeled"], "validation": setup["labeled"]},
    }

    def arrange(*workers: tuple[str, list[str], list[str], float]) -> None:
        db.execute(sa.delete(WorkerPresence))
        for name, queues, caps, age_s in workers:
            fleet.upsert(db, name=name, queues=queues, capabilities=caps)
            db.get(WorkerPresence, name).seen_at = utcnow() - timedelta(seconds=age_s)
        db.commit()

    try:
        arrange(("w1@a:1", ["default"], [], 0), ("w2@b:2", ["default"], [], 5), ("m@c:3", ["measure"], ["torch"], 0))
        r = client.post("/v1/jobs", headers=auth, json=body)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["type"].endswith("missing-dependency")
        assert problem["missing"] == ["torch"] and problem["live_workers"] == 2
        assert "pip install torch==2.13.0" in problem["detail"]
        kinds = {k["name"]: k for k in client.get("/v1/kinds", headers=auth).json()}
        assert kinds["distill"]["needs"] == ["torch"] and kinds["distill"]["runnable"] == "none"
        assert kinds["distill"]["live_workers"] == 2
        assert kinds["evaluate"]["runnable"] == "all"  # on "measure", served by a live worker
        # a kind that needs nothing optional is not affected
        evaluate = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
        assert client.post("/v1/jobs", headers=auth, json=evaluate).status_code == 202

        # the no-torch workers went silent long ago and one with torch is live: accepted
        arrange(("w1@a:1", ["default"], [], 3600), ("w3@d:4", ["default"], ["torch"], 0))
        assert client.post("/v1/jobs", headers=auth, json=body).status_code == 202
        # a mixed fleet: accepted, and the kinds list says only some workers can run it
        arrange(("w1@a:1", ["default"], [], 0), ("w3@d:4", ["default"], ["torch"], 0))
        assert client.post("/v1/jobs", headers=auth, json=body).status_code == 202
        kinds = {k["name"]: k for k in client.get("/v1/kinds", headers=auth).json()}
        assert kinds["distill"]["runnable"] == "some" and kinds["benchmark"]["runnable"] == "unknown"
        # nobody live at all: the service cannot tell, the job is accepted (the worker fails it if need be)
        arrange(("w1@a:1", ["default"], [], 3600))
        assert client.post("/v1/jobs", headers=auth, json=body).status_code == 202
    finally:
        arrange()


def test_kinds_list_every_kind_with_its_params_schema(client, auth) -> None:
    assert client.get("/v1/kinds").status_code == 401
    kinds = {k["name"]: k for k in client.get("/v1/kinds", headers=auth).json()}
    assert {"evaluate", "benchmark", "compare", "quantize", "diagnose", "prune", "distill", "optimize"} <= set(kinds)
    opt = kinds["optimize"]
    assert opt["queue"] == "measure" and opt["required_roles"] == ["eval"] and "train" in opt["dataset_roles"]
    assert "max_accuracy_drop" in opt["params_schema"]["properties"] and opt["needs"] == []
    assert kinds["compare"]["params_schema"]["required"] == ["other_model_id"]
    assert kinds["optimize"]["description"].startswith("The `optimize` job kind")


def test_a_default_budget_above_the_job_limit_is_shrunk_below_it(settings, auth, setup) -> None:
    """An explicit max_seconds >= the limit is a 422 (test_bad_job_requests); a default one is fitted under it."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    short = settings.model_copy(update={"job_time_limit_s": 600.0})
    with TestClient(create_app(short), raise_server_exceptions=False) as c:
        body = {"kind": "optimize", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
        r = c.post("/v1/jobs", headers=auth, json=body)
        assert r.status_code == 202, r.text
        assert r.json()["params"]["max_seconds"] == 480  # 0.8 x the limit, room to measure the choice
        r = c.post("/v1/jobs", headers=auth, json={**body, "params": {"max_seconds": 700}})
        assert r.status_code == 422 and "job time limit" in r.json()["detail"]


def test_the_same_idempotency_key_sent_concurrently_gets_the_replay(settings, setup, db) -> None:
    """The second of two concurrent submits with one key waits on the unique index, then answers the first one's
    job as a replay (it used to be a 500 UniqueViolation)."""
    import sqlalchemy as sa

    from service.jobs import service as jobs
    from service.jobs.schemas import JobCreate
    from service.jobs.tables import Job
    from service.model_files.tables import ModelFile
    from tests.races import race

    tenant_id = db.get(ModelFile, setup["model"]).tenant_id
    body = JobCreate.model_validate(
        {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
    )
    (job, created), (other, other_created) = race(
        settings.resolved_database_url,
        lambda session: jobs.submit(
            db=session, settings=settings, tenant_id=tenant_id, body=body, idempotency_key="race"
        ),
    )
    assert created and not other_created and other.id == job.id
    assert db.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.idempotency_key == "race")) == 1


def test_a_report_link_token_with_non_ascii_digits_is_refused_not_a_500(client, auth, setup) -> None:
    body = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
    job = client.post("/v1/jobs", headers=auth, json=body).json()
    for token in ("².abc", "١٢٣.abc", "-1.abc", "", "..."):  # "²".isdigit() and int("²") fails
        r = client.get(f"/v1/jobs/{job['id']}/report.html", params={"token": token})
        assert r.status_code == 401, (token, r.text)


class Broker:
    """The reconciler's view of the broker in these tests: a queue depth it is told, the sends it makes (the database
    is the real one)."""

    def __init__(self, depth: int) -> None:
        self.depth, self.sent = depth, list[str]()

    def queue_depth(self, queue: str) -> int:
        return self.depth

    def send(self, *, kind: str, job_id: str) -> None:
        self.sent.append(job_id)


def test_an_unclaimed_queued_job_is_resent_once_even_when_its_queue_stays_busy(
    client, auth, setup, settings, db
) -> None:
    """Under steady load the queue is never empty: a job whose message was lost (e.g. taken while the database was
    down) used to wait for ever. It is re-sent once while the queue is busy, and again whenever the queue is empty."""
    import sqlalchemy as sa

    from service.db import make_engine, make_session_factory
    from service.jobs.repository import RESENT_STAGE
    from service.storage import open_store
    from workers.reconciler import reconcile_once
    from workers.runner import Context

    body = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
    job = client.post("/v1/jobs", headers=auth, json=body).json()

    def age() -> None:
        db.execute(sa.text("UPDATE jobs SET enqueued_at = now() - interval '1 hour' WHERE id = :id"), {"id": job["id"]})
        db.commit()

    engine = make_engine(settings.resolved_database_url)
    ctx = Context(settings, make_session_factory(engine), open_store(settings))
    broker = Broker(depth=3)
    age()
    assert reconcile_once(None, ctx, broker)["resent"] == 1 and broker.sent == [job["id"]]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["stage"] == RESENT_STAGE
    age()
    assert reconcile_once(None, ctx, broker)["resent"] == 0  # once while busy
    broker.depth = 0
    assert reconcile_once(None, ctx, broker)["resent"] == 1  # an empty queue: it has no message, send it
    engine.dispose()


def test_the_reconciler_never_takes_a_job_its_own_worker_runs_for_lost(client, auth, setup, settings, db) -> None:
    """On a busy machine a heartbeat can be late: a worker used to re-queue its own running job after a short lease."""
    import sqlalchemy as sa

    from service.db import make_engine, make_session_factory
    from service.storage import open_store
    from workers.reconciler import reconcile_once
    from workers.runner import RUNNING, Context

    body = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
    job = client.post("/v1/jobs", headers=auth, json=body).json()
    db.execute(
        sa.text(
            "UPDATE jobs SET status = 'running', attempts = 1, heartbeat_at = now() - interval '1 hour' WHERE id = :id"
        ),
        {"id": job["id"]},
    )
    db.commit()

    engine = make_engine(settings.resolved_database_url)
    ctx = Context(settings, make_session_factory(engine), open_store(settings))
    with RUNNING.holding(job["id"]):  # this worker runs it: late heartbeat or not, it is not lost
        assert reconcile_once(None, ctx, Broker(depth=0))["requeued"] == 0
    assert reconcile_once(None, ctx, Broker(depth=0))["requeued"] == 1  # nobody here runs it: it was lost
    engine.dispose()


def test_the_heartbeat_beats_from_its_own_thread_while_the_attempt_is_busy_and_sees_a_cancel(
    client, auth, setup, settings, db
) -> None:
    """The heartbeat was written only when the sandbox's watch loop called it, so a long fetch or save (or a
    watch loop starved on a busy machine) let it go stale past the lease. It now beats from a thread of its own."""
    import time

    import sqlalchemy as sa

    from service.db import make_engine, make_session_factory
    from service.storage import open_store
    from workers.runner import Context, Heartbeat

    settings.job_lease_s = 0.9  # a beat every 0.3 s
    body = {"kind": "evaluate", "model_id": setup["model"], "datasets": {"eval": setup["labeled"]}}
    job = client.post("/v1/jobs", headers=auth, json=body).json()
    db.execute(sa.text("UPDATE jobs SET status = 'running', attempts = 1, heartbeat_at = NULL WHERE id = :id"), job)
    db.commit()

    def heartbeat_age() -> float:
        db.expire_all()
        return db.scalar(sa.text("SELECT extract(epoch FROM now() - heartbeat_at) FROM jobs WHERE id = :id"), job)

    engine = make_engine(settings.resolved_database_url)
    ctx = Context(settings, make_session_factory(engine), open_store(settings))
    with Heartbeat(ctx, job["id"], 1) as heartbeat:
        time.sleep(2.0)  # the attempt's own thread busy (a long fetch): nobody calls the heartbeat
        assert heartbeat_age() < 0.9, "the heartbeat went stale while the attempt's thread was busy"
        assert heartbeat({"progress": 0.5, "stage": "half way"}) is True
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
        deadline = time.monotonic() + 10
        while not heartbeat.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heartbeat.lost.is_set() and heartbeat(None) is False, "a cancel did not stop the attempt"
    assert heartbeat.longest_gap < 0.9
    engine.dispose()


def test_a_learning_curve_that_cannot_fit_the_job_time_limit_is_refused_at_submit(client, auth, settings, tmp_path):
    """The learning curve trains (search + one full-size run per share): estimated at submit like distill, a 422
    naming the limit when it cannot fit; the same request without it is accepted."""
    wide = _model(client, auth, onnx_models.mlp(tmp_path / "wide.onnx", n_in=256, hidden=4096, n_out=4))
    x = np.zeros((5000, 256), np.float32)  # 4 shares x 1,000 epochs x 5,000 samples x 3 x 1M MACs: ~6,500 s
    data = _dataset(client, auth, data_files.npz(tmp_path / "w.npz", x=x, y=np.arange(5000) % 4))
    body = {"kind": "diagnose", "model_id": wide, "datasets": {"train": data, "validation": data}}
    params = {"learning_curve": True, "learning_curve_epochs": 1000}
    r = client.post("/v1/jobs", headers=auth, json={**body, "params": params})
    limit = f"job time limit of {settings.job_time_limit_s:g} s"
    assert r.status_code == 422 and r.json()["type"].endswith("/too-long") and limit in r.json()["detail"], r.text
    r = client.post("/v1/jobs", headers=auth, json={**body, "params": {**params, "learning_curve_sizes": [0, 1]}})
    assert r.status_code == 422 and "learning_curve_sizes" in r.text
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 202
