"""Usage metering: what each tenant used, by UTC day (jobs, images, variants, model
seconds, callbacks delivered), added in the same transaction as what it counts, so a
figure is never ahead of, or behind, the work. One upsert per tenant and day
(``INSERT ... ON CONFLICT DO UPDATE``, on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from functools import lru_cache
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from schemas.tables import UsageDay, utcnow


@dataclass
class Used:
    """What to add to one tenant's day."""

    jobs: int = 0
    images: int = 0
    variants: int = 0
    model_seconds: float = 0.0
    callbacks: int = 0

    def __iadd__(self, other: Used) -> Used:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def add_usage(*, session: Session, used: Mapping[str, Used], day: date | None = None) -> None:
    """Add ``used`` (tenant id → figures) to today's rows (or ``day``'s)."""
    day = day or utcnow().date()
    rows = [
        {"tenant_id": tenant_id, "day": day, **vars(figures)}
        for tenant_id, figures in used.items()
        if any(vars(figures).values())
    ]
    if not rows:
        return
    session.connection().execute(_upsert(session.get_bind().dialect.name), rows)


@lru_cache(maxsize=2)
def _upsert(dialect_name: str) -> Any:
    """The upsert of a tenant's day, built once per dialect and run for every row."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    table = UsageDay.__table__  # type: ignore[attr-defined]
    insert = dialect.insert(table)
    counted = [f.name for f in fields(Used)]
    return insert.on_conflict_do_update(
        index_elements=["tenant_id", "day"],
        set_={name: table.c[name] + insert.excluded[name] for name in counted},
    )


def usage(
    *, session: Session, tenant_id: str | None = None, since: date | None = None,
    until: date | None = None,
) -> list[UsageDay]:  # fmt: skip
    """Rows by tenant and day (oldest first), of one tenant or all, between two days."""
    query = select(UsageDay)
    if tenant_id is not None:
        query = query.where(UsageDay.tenant_id == tenant_id)
    if since is not None:
        query = query.where(col(UsageDay.day) >= since)
    if until is not None:
        query = query.where(col(UsageDay.day) <= until)
    return list(session.exec(query.order_by(col(UsageDay.day), col(UsageDay.tenant_id))).all())
