"""The `diagnose` kind."""

from engine.kinds.diagnose.kind import KIND, DiagnoseReport
from engine.kinds.diagnose.models import DiagnoseParams

__all__ = ["KIND", "DiagnoseParams", "DiagnoseReport"]
