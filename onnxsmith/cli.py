"""The `onnxsmith` command. Service code is imported inside the commands that need it."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from onnxsmith.cli_optimize import optimize
from onnxsmith.cli_remote import datasets_app, jobs_app, models_app

app = typer.Typer(help="onnxsmith: diagnose and compress ONNX models.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.command("optimize")(optimize)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # long paths and keys stay whole (copy-paste)


def _settings() -> Any:
    from service.settings import get_settings

    return get_settings()


def _session() -> Any:
    from service.db import make_engine, make_session_factory, session_scope

    engine = make_engine(_settings().resolved_database_url)
    return session_scope(make_session_factory(engine))


def _admin_session() -> Any:
    """A session for the admin commands (keys): a missing embedded database, one not migrated or one that cannot be
    reached is a message naming where it looked (exit 2), never a traceback or a new empty database."""
    from sqlalchemy import make_url

    from service import migrations
    from service.db import make_engine, make_session_factory, session_scope

    settings = _settings()
    url = settings.resolved_database_url
    if settings.uses_embedded_database and not (settings.resolved_data_dir / "onnxsmith.db").is_file():
        err.print(
            f"error: no onnxsmith database in {settings.resolved_data_dir} (the data folder: ONNXSMITH_DATA_DIR, "
            "by default ./onnxsmith-data in the current folder). Run this command in the folder where you ran "
            "`onnxsmith serve`, or set ONNXSMITH_DATA_DIR (or ONNXSMITH_DATABASE_URL) to the service's.",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        engine = make_engine(url)
        current = migrations.current_revision(engine)
    except Exception as exc:  # noqa: BLE001 - any driver's connection error, said in one line
        err.print(f"error: cannot open the database {shown}: {str(exc).splitlines()[0][:300]}", soft_wrap=True)
        raise typer.Exit(2) from None
    if current != migrations.head_revision():
        err.print(
            f"error: the database {shown} is at migration {current or 'none'}, this onnxsmith needs "
            f"{migrations.head_revision()}: run `onnxsmith db upgrade`",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return session_scope(make_session_factory(engine))  # the engine that was checked, not a second one


def _log_to_stderr() -> None:
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("onnxsmith").addHandler(handler)
    logging.getLogger("onnxsmith").setLevel(logging.INFO)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
    with_worker: bool = typer.Option(
        True, "--with-worker/--no-worker", help="Also run a Celery worker beside the API (stopped with it)"
    ),
) -> None:
    """Start the API and a worker. With no configuration: SQLite, a local store and a filesystem broker under
    ./onnxsmith-data, so nothing else needs to run."""
    import uvicorn

    from service import migrations
    from service.tenants import service as tenants

    settings = _settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    if settings.uses_embedded_database:
        migrations.upgrade(settings.resolved_database_url)
        for db in _session():
            if not tenants.has_any_key(db=db):
                new = tenants.create_key(db=db, tenant_name="default", key_name="created by serve")
                err.print("API key for tenant 'default' (shown once, keep it):")
                print(new.key, flush=True)
            else:
                err.print(
                    "API keys exist in this data folder (shown only when created); another one: "
                    "`onnxsmith keys create --tenant NAME` in this folder"
                )
        err.print(f"data folder: {settings.resolved_data_dir}")
    _log_to_stderr()
    worker_proc = _start_embedded_worker() if with_worker else None
    console.print(f"onnxsmith on http://{host}:{port} (API docs: http://{host}:{port}/docs)")
    try:
        uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers)
    finally:
        if worker_proc is not None:
            _stop(worker_proc)


def _start_embedded_worker() -> Any:
    """The same `onnxsmith worker` as in production, as a child that dies with this process."""
    import os
    import subprocess

    def _die_with_parent() -> None:
        try:
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when serve dies
        except (OSError, AttributeError):
            pass

    return subprocess.Popen(
        # -c rather than -m onnxsmith.cli: multiprocessing re-runs a `-m` main module in every job child (a
        # RuntimeWarning from runpy in the console, and ~4 ms a job); a -c main is not re-run
        [
            sys.executable,
            "-c",
            "from onnxsmith.cli import main; main()",
            "worker",
            "--quiet",
            "--hostname",
            f"embedded-{os.getpid()}@%h",
        ],  # fmt: skip
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - runs before exec, no threads yet
    )


def _stop(proc: Any) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@app.command()
def worker(
    queues: str | None = typer.Option(None, help="Comma-separated queues to consume (default: all of them)"),
    concurrency: int = typer.Option(1, help="Parallel jobs; keep 1 for the measure queue (speed measurements)"),
    loglevel: str = typer.Option("INFO", help="Celery log level"),
    hostname: str | None = typer.Option(None, help="Node name (default celery@<host>); unique per machine"),
    quiet: bool = typer.Option(False, "--quiet", hidden=True, help="No banner, no warning about root (serve's own)"),
) -> None:
    """Start a Celery worker (ONNXSMITH_BROKER_URL, ONNXSMITH_DATABASE_URL, ONNXSMITH_STORAGE_URL)."""
    from engine.core.kind import QUEUES
    from workers.celery_app import app as celery_app

    if quiet:  # the worker `serve` starts beside the API: same user as the API, its logs only
        import warnings

        from celery.exceptions import SecurityWarning

        warnings.filterwarnings("ignore", category=SecurityWarning)

    argv = [
        "worker",
        f"--queues={queues or ','.join(QUEUES)}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        # threads: the work itself runs in sandboxed child processes forked from a preloaded forkserver
        # (which a daemonic prefork pool process may not start); the pool threads only wait and write rows.
        "--pool=threads",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if quiet:
        argv.insert(0, "--quiet")  # celery's own option, before the subcommand
    celery_app.worker_main(argv)


@app.command()
def cleanup(
    grace_s: float = typer.Option(3600.0, help="Keep objects younger than this (uploads in progress)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed"),
) -> None:
    """Remove stored objects that no model, dataset or artifact references any more."""
    from service.db import make_engine, make_session_factory
    from service.storage import open_store
    from service.storage.cleanup import cleanup as run_cleanup

    settings = _settings()
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    report = run_cleanup(sessions=sessions, store=open_store(settings), grace_s=grace_s, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for key in report.removed:
        console.print(f"{verb} {key}")
    console.print(
        f"{report.objects_seen} objects seen, {len(report.removed)} {verb}, "
        f"{report.kept_recent} kept as younger than {grace_s:g} s"
    )


@app.command("example-files")
def example_files(
    folder: str = typer.Argument(..., help="Where to write them (created if needed)"),
    epochs: int = typer.Option(30, min=1, max=500, help="Training epochs of the digits MLP"),
) -> None:
    """Write the files the README's walk-throughs use: classifier.onnx and classifier-test.npz; digits_mlp.onnx,
    train.npz, val.npz, test.npz and history.json (an MLP trained here with numpy)."""
    from pathlib import Path

    from engine.examples import write_examples

    made = write_examples(Path(folder), epochs=epochs)
    for path in made.files.values():
        console.print(f"{path}  ({path.stat().st_size:,} bytes)", soft_wrap=True, highlight=False)
    console.print(
        f"digits data: {made.digits_source}; the MLP's test accuracy: {made.digits_test_accuracy:.3f}",
        soft_wrap=True,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the database (ONNXSMITH_DATABASE_URL) to the given revision."""
    from service import migrations

    settings = _settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.resolved_database_url, revision)
    console.print(f"database at {migrations.head_revision() if revision == 'head' else revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision and the code's head."""
    from service import migrations
    from service.db import make_engine

    engine = make_engine(_settings().resolved_database_url)
    console.print(f"database: {migrations.current_revision(engine) or 'none'}  code: {migrations.head_revision()}")


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., help="Tenant name (created if new)"),
    name: str | None = typer.Option(None, help="A label for the key"),
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    from service.tenants import service as tenants

    try:
        for db in _admin_session():
            new = tenants.create_key(db=db, tenant_name=tenant, key_name=name)
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from None
    err.print(f"key {new.key_id} for tenant {tenant!r}; shown once:")
    print(new.key)


@keys_app.command("list")
def keys_list(tenant: str | None = typer.Option(None, help="Only this tenant's keys")) -> None:
    """List keys (never the keys themselves: their id and first characters)."""
    from service.tenants import service as tenants

    rows = [("ID", "TENANT", "PREFIX", "CREATED", "REVOKED", "NAME")]
    for db in _admin_session():
        for key, ten in tenants.list_keys(db=db, tenant_name=tenant):
            revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
            created = key.created_at.isoformat(timespec="seconds")
            rows.append((key.id, ten.name, key.prefix + "...", created, revoked, key.name or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (see `keys list`)")) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from service.tenants import service as tenants

    for db in _admin_session():
        done = tenants.revoke_key(db=db, key_id=key_id)
    if not done:
        err.print(f"error: no active key {key_id!r}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


def main() -> None:
    app(prog_name="onnxsmith")


if __name__ == "__main__":
    main()
