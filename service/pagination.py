from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")

LimitQuery = Annotated[int, Query(ge=1, le=200, description="Page size")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=64, pattern=r"^[a-z]+_[0-9a-z]{26}$", description="`next_cursor` of the previous page"),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


def split_page(rows: list[T], limit: int) -> tuple[list[T], str | None]:
    """Repositories fetch limit + 1 rows: the extra one says whether there is a next page."""
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id  # type: ignore[attr-defined]
    return rows, None
