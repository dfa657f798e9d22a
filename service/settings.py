"""One Settings object for the whole service, read from ONNXSMITH_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1 << 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONNXSMITH_", extra="ignore")

    data_dir: Path = Field(
        default=Path("onnxsmith-data"),
        description="Folder for the embedded defaults: SQLite file, local object store, temp uploads.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. Default: SQLite in data_dir.",
    )
    db_pool_size: int = Field(
        default=16,
        ge=1,
        description="Database connections per API process, kept open once opened (no overflow connections opened "
        "and closed under load); the API's thread pool gets as many threads, so a thread never waits for one. "
        "PostgreSQL's max_connections must cover API processes x this, plus two per worker.",
    )
    storage_url: str | None = Field(
        default=None,
        description="file:///abs/path or s3://bucket/prefix. Default: file store in data_dir/store.",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, R2...).")
    s3_region: str | None = Field(default=None, description="S3 region name.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret access key.")

    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs report links. Default: a random key in data_dir/secret.key (set it when several "
        "machines serve the API).",
    )
    report_link_ttl_s: int = Field(default=3600, description="How long a signed report link stays valid.")
    api_key_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long an API process remembers a valid key (saves a database round trip per request); a "
        "revoked key keeps working for up to this long. 0: look every key up in the database.",
    )
    operator_key: SecretStr | None = Field(
        default=None,
        description="Bearer key that opens /metrics and the details of /readyz from anywhere (operators' tools).",
    )
    operator_networks: list[str] = Field(
        default=["127.0.0.0/8", "::1/128"],
        description="Clients in these networks are operators without a key (a metrics scraper on the machine).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker, e.g. redis://127.0.0.1:6379/0. Default: filesystem:// (message files in "
        "data_dir/broker, no server; for one machine).",
    )
    max_model_bytes: int = Field(default=2 * GIB, description="Largest accepted model upload (bytes).")
    max_bundle_bytes: int = Field(
        default=16 * GIB,
        description="Largest accepted model archive (a .zip or .tar of a model with its external data files), as "
        "uploaded and as unpacked (bytes). A single .onnx file stays under max_model_bytes.",
    )
    upload_part_bytes: int = Field(
        default=16 << 20, ge=1 << 16, description="Part size of resumable uploads (POST /v1/uploads)."
    )
    upload_session_ttl_s: float = Field(
        default=24 * 3600.0, description="A resumable upload untouched for this long is removed with its parts."
    )
    bundle_max_members: int = Field(default=1000, description="Most members (files and folders) in a model archive.")
    inspect_runtime_max_bytes: int = Field(
        default=512 << 20,
        description="A bundle with more external data than this is checked without creating an ONNX Runtime "
        "session (which would read every weight into the checking child's memory): its info says "
        "runtime_checked false.",
    )
    max_dataset_bytes: int = Field(default=2 * GIB, description="Largest accepted dataset upload (bytes).")
    upload_idle_timeout_s: float = Field(
        default=30.0,
        description="An upload whose body sends nothing for this long is cut (408) and its temp file removed.",
    )
    upload_min_bytes_per_s: int = Field(
        default=1024,
        description="After upload_idle_timeout_s, an upload slower than this on average is cut (408): a body "
        "dripped a byte at a time cannot hold a connection and a temp file for hours.",
    )
    max_uploads_per_tenant: int = Field(
        default=4,
        description="Uploads one tenant may have in flight at once in one API process; more are refused with 429.",
    )
    max_uploads: int = Field(
        default=64, description="Uploads in flight at once in one API process, all tenants; more are refused with 429."
    )
    max_concurrent_checks: int = Field(
        default=0,
        description="Checking children (one per model or dataset upload) running at once in one API process; "
        "the others wait their turn (at most sandbox_timeout_s, then 503). 0: one per CPU.",
    )
    job_time_limit_s: float = Field(default=3600.0, description="Wall-time limit of one job attempt.")
    job_memory_mb: int = Field(default=8192, description="Address-space limit of a job's child process.")
    job_threads: int = Field(default=2, description="Most CPU threads a job's engine may use.")
    job_max_attempts: int = Field(
        default=3, description="Deliveries of one job before it fails with worker_lost (a model that kills workers)."
    )
    visibility_timeout_s: int | None = Field(
        default=None,
        description="Redis visibility timeout: an unacknowledged message is redelivered after this. Must exceed "
        "job_time_limit_s. Default: job_time_limit_s + 2 x job_lease_s + 60.",
    )
    reconcile_interval_s: float = Field(
        default=30.0, description="How often each worker runs the reconciler and refreshes its presence row."
    )
    requeue_after_s: float = Field(
        default=120.0,
        description="A queued job whose message is older than this while its queue is empty is sent again.",
    )
    job_lease_s: float = Field(
        default=30.0, description="A running job whose heartbeat is older than this is considered lost."
    )
    sandbox_memory_mb: int = Field(
        default=4096, description="Address-space limit of the child process that checks a model."
    )
    sandbox_timeout_s: float = Field(default=120.0, description="Wall-time limit of the checking child.")

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'onnxsmith.db'}"

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return (self.resolved_data_dir / "store").as_uri()

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return "filesystem://localhost/"  # a host named: kombu warns twice per process without one

    @property
    def broker_folder(self) -> Path:
        """Message files of the filesystem:// broker (the embedded default)."""
        return self.resolved_data_dir / "broker"

    @property
    def resolved_visibility_timeout_s(self) -> int:
        """Redis redelivers an unacknowledged message after this: above the job's hard time limit."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return int(self.job_time_limit_s + 2 * self.job_lease_s + 60)

    @property
    def presence_ttl_s(self) -> float:
        """A worker not seen for this long is taken as gone (it refreshes its row every reconcile interval)."""
        return 3 * self.reconcile_interval_s + 30

    @property
    def resolved_max_concurrent_checks(self) -> int:
        return self.max_concurrent_checks or (os.cpu_count() or 1)

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def tmp_dir(self) -> Path:
        """Where uploads are spooled while they are hashed and checked (never the object store)."""
        return self.resolved_data_dir / "tmp"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
