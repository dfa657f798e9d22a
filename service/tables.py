"""Every ORM table, imported in one place so metadata is complete (Alembic, schema checks)."""

from service.db import Base
from service.model_files.tables import ModelFile
from service.storage.tables import Blob
from service.tenants.tables import ApiKey, Tenant

__all__ = ["ApiKey", "Base", "Blob", "ModelFile", "Tenant"]
