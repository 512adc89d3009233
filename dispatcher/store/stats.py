"""Aggregate figures for ``GET /metrics``: counts, sums and histograms, one GROUP BY each.

Read at scrape time, so they survive restarts and always agree with the rows;
no query loads a job (the cost of a scrape grows with the number of groups, not
of jobs, bar the database's own scan). Durations come from the jobs' timestamps,
worked out in SQL by the store's backend (:meth:`~dispatcher.store.backends.Backend.seconds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, func, select

from dispatcher.store.database import Store
from dispatcher.store.models import Delivery, Event, Job, Repo


@dataclass(frozen=True)
class Histogram:
    """Observations of one label set: how many fell at or under each bound, in order
    (cumulative, as Prometheus has them), their count and their sum."""

    at_most: tuple[int, ...]
    count: int
    total: float


def _histograms(
    store: Store,
    span: tuple[Any, Any],
    keys: Sequence[Any],
    where: Sequence[Any],
    bounds: Sequence[float],
) -> dict[tuple[str, ...], Histogram]:
    # Each row's seconds (``span``: from, to) worked out once (a materialized CTE), then
    # summed per bound.
    seconds = store.backend.seconds(*span)
    rows = sa.select(*keys, seconds.label("s")).where(*where).cte("observed")
    if store.backend.materialized_ctes:
        rows = rows.prefix_with("MATERIALIZED")
    grouped = [rows.c[i] for i in range(len(keys))]
    secs = rows.c.s
    under = [func.sum(sa.case((secs <= bound, 1), else_=0)) for bound in bounds]
    query = sa.select(*grouped, func.count(), func.sum(secs), *under).group_by(*grouped)
    out: dict[tuple[str, ...], Histogram] = {}
    with store.reading() as s:
        for row in s.connection().execute(query).all():
            n = len(keys)
            out[tuple(str(k) for k in row[:n])] = Histogram(
                at_most=tuple(int(v or 0) for v in row[n + 2 :]),
                count=int(row[n]),
                total=float(row[n + 1] or 0.0),
            )
    return out


def job_durations(store: Store, bounds: Sequence[float]) -> dict[tuple[str, ...], Histogram]:
    """Agent run time (started to finished) of every job that ran, by (repo, agent)."""
    keys = [Repo.name, Job.agent]
    where = [col(Job.started_at).is_not(None), col(Job.finished_at).is_not(None)]
    return _histograms(
        store, (Job.started_at, Job.finished_at), keys,
        [*where, col(Job.repo_id) == col(Repo.id)], bounds,
    )  # fmt: skip


def spawn_latencies(store: Store, bounds: Sequence[float]) -> dict[tuple[str, ...], Histogram]:
    """Claimed to agent started (worktree, copy/link, ``setup:``, spawn), by repo."""
    # A job queued again after a lost run keeps that run's start until its next one:
    # only a start of this claim counts.
    where = [col(Job.claimed_at).is_not(None), col(Job.started_at) >= col(Job.claimed_at)]
    return _histograms(
        store, (Job.claimed_at, Job.started_at), [Repo.name],
        [*where, col(Job.repo_id) == col(Repo.id)], bounds,
    )  # fmt: skip


def job_states(store: Store) -> dict[tuple[str, str], int]:
    """Jobs by (repo, state)."""
    query = (
        select(Repo.name, Job.state, func.count())
        .where(col(Job.repo_id) == col(Repo.id))
        .group_by(col(Repo.name), col(Job.state))
    )
    with store.reading() as s:
        return {(name, str(state)): n for name, state, n in s.exec(query).all()}


def costs(store: Store) -> dict[tuple[str, ...], float]:
    """Agents' reported cost in USD, by (repo, agent): jobs that reported none add nothing."""
    query = (
        select(Repo.name, Job.agent, func.sum(Job.cost_usd))
        .where(col(Job.repo_id) == col(Repo.id), col(Job.cost_usd).is_not(None))
        .group_by(col(Repo.name), col(Job.agent))
    )
    with store.reading() as s:
        return {(name, agent): float(total or 0.0) for name, agent, total in s.exec(query).all()}


# What became of a stored event (docs/observability.md): a trigger still being decided,
# at least one job, matched but no job (a check passed, a template failed ...), no match.
EVENT_OUTCOMES = ("pending", "job", "no_job", "unmatched")


def events(store: Store) -> dict[tuple[str, ...], float]:
    """Stored events by (repo, source, outcome)."""
    has_job = sa.exists().where(col(Job.event_id) == col(Event.id))
    outcome = sa.case(
        (sa.cast(Event.pending_triggers, sa.String) != "[]", "pending"),
        (has_job, "job"),
        (sa.cast(Event.matched, sa.String) != "[]", "no_job"),
        else_="unmatched",
    )
    query = (
        select(Repo.name, Event.source, outcome, func.count())
        .where(col(Event.repo_id) == col(Repo.id))
        .group_by(col(Repo.name), col(Event.source), outcome)
    )
    with store.reading() as s:
        return {(name, src, str(out)): n for name, src, out, n in s.exec(query).all()}


def deliveries(store: Store) -> dict[tuple[str, ...], float]:
    """Notification deliveries (each target's final outcome of one notice) by
    (repo, target type, outcome: ``delivered`` or ``failed``)."""
    outcome = sa.case((col(Delivery.ok), "delivered"), else_="failed")
    query = (
        select(Repo.name, Delivery.target, outcome, func.count())
        .where(col(Delivery.job_id) == col(Job.id), col(Job.repo_id) == col(Repo.id))
        .group_by(col(Repo.name), col(Delivery.target), outcome)
    )
    with store.reading() as s:
        return {(name, target, str(out)): n for name, target, out, n in s.exec(query).all()}


def repo_names(store: Store) -> list[str]:
    """Every registered repo's name (each gets its series, zeros included)."""
    with store.reading() as s:
        return list(s.exec(select(Repo.name).order_by(col(Repo.name))).all())
