"""Every ORM table, imported in one place so metadata is complete (Alembic, schema checks)."""

from service.artifacts.tables import Artifact
from service.datasets.tables import Dataset
from service.db import Base
from service.fleet.tables import WorkerPresence
from service.jobs.tables import Job
from service.model_files.tables import ModelFile
from service.storage.tables import Blob
from service.tenants.tables import ApiKey, Tenant

__all__ = ["ApiKey", "Artifact", "Base", "Blob", "Dataset", "Job", "ModelFile", "Tenant", "WorkerPresence"]
