"""The audit log: who changed what and when, across label events, image events, duplicate marks,
snapshots, model runs, review queues, account changes and ingests (the catalog's `audit_log`
view).

Entry points: `audit_page(con, filters, page=...)` for one page of acts, newest first, and
`activity(con, filters)` for each person's acts per day and per kind. Both are for leads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from core import catalog, users

KINDS = catalog.AUDIT_KINDS
PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilter:
    """Which acts to show; None (or every kind) means no filter on that field."""
    dataset_id: int | None = None
    who: str | None = None
    kinds: tuple[str, ...] = KINDS
    since: datetime | None = None        # inclusive, UTC
    until: datetime | None = None        # exclusive, UTC

    def __post_init__(self):
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown audit kind(s) {', '.join(unknown)} "
                             f"(kinds: {', '.join(KINDS)})")
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"the time range is empty: from {self.since} to {self.until}")

    def params(self) -> dict:
        return {"dataset_id": self.dataset_id, "who": self.who or None, "kinds": list(self.kinds),
                "since": self.since, "until": self.until}


@dataclass(frozen=True)
class AuditPage:
    frame: pd.DataFrame      # created_at, who, who_kind, kind, dataset, action, target, detail
    total: int               # acts matching the filter
    page: int                # 1-based
    pages: int


@dataclass(frozen=True)
class Activity:
    per_day: pd.DataFrame    # who, day, acts
    per_kind: pd.DataFrame   # who, one column per kind, total — busiest first
    rows: pd.DataFrame = field(repr=False)  # who, day, kind, acts


def audit_page(con, filters: AuditFilter, *, user: str | None = None, page: int = 1,
               page_size: int = PAGE_SIZE) -> AuditPage:
    """One page of the acts matching `filters`, newest first; `user` needs 'audit' (a lead)."""
    users.require(con, user, "audit")
    if page < 1 or page_size < 1:
        raise ValueError(f"page {page} of size {page_size}: both start at 1")
    total = catalog.count_audit(con, **filters.params())
    pages = max(1, -(-total // page_size))
    page = min(page, pages)
    frame = catalog.audit_page(con, **filters.params(), limit=page_size,
                               offset=(page - 1) * page_size)
    return AuditPage(frame, total, page, pages)


def activity(con, filters: AuditFilter, *, user: str | None = None) -> Activity:
    """People's acts (not imports or models) per day and per kind, for the filtered range."""
    users.require(con, user, "audit")
    rows = catalog.audit_activity(con, **filters.params())
    per_day = rows.groupby(["who", "day"], as_index=False)["acts"].sum()
    per_kind = rows.pivot_table(index="who", columns="kind", values="acts", aggfunc="sum",
                                fill_value=0)
    per_kind = per_kind.assign(total=per_kind.sum(axis=1)).sort_values("total", ascending=False)
    return Activity(per_day, per_kind.reset_index().rename_axis(columns=None), rows)


def people(con) -> list[str]:
    """Names to filter by: people first, then imports and models."""
    return catalog.audit_people(con)
