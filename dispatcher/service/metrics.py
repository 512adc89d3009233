"""``GET /metrics``: the daemon's figures in the Prometheus text format.

Two kinds of series (docs/observability.md lists each):

* from the store, read at scrape time by :class:`StoreCollector` (aggregate
  queries of :mod:`dispatcher.store.stats`): they survive restarts and always
  agree with the jobs, events and deliveries the API shows;
* in-process, where the store keeps nothing: the warm pool's idle trees (read
  from the pool at scrape time), and the observations the runner and the intake
  hand to :class:`Metrics` through their hooks (they start again from zero at
  each daemon start).

Each :class:`Metrics` has a registry of its own (never prometheus-client's
global one: tests run many daemons' apps in one process).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, generate_latest
from prometheus_client import Histogram as InProcessHistogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dispatcher import __version__
from dispatcher.jobs.pool import WorktreePool
from dispatcher.lifecycle import JobState
from dispatcher.store import stats
from dispatcher.store.database import Store

# Agents run for minutes; a worktree and a spawn take (milli)seconds, setup: minutes.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
SPAWN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
WORKTREE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _histogram(
    name: str,
    doc: str,
    labels: Sequence[str],
    bounds: Sequence[float],
    found: dict[tuple[str, ...], stats.Histogram],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for key, h in sorted(found.items()):
        buckets = [(str(b), float(n)) for b, n in zip(bounds, h.at_most, strict=True)]
        family.add_metric(list(key), [*buckets, ("+Inf", float(h.count))], h.total)
    return family


def _family(
    family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[tuple[str, ...], float]
) -> Metric:
    """``family`` with a sample per label set of ``values``."""
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class StoreCollector(Collector):
    """The state-derived series, read from the store (and the pool) at each scrape."""

    def __init__(self, store: Store, pool: WorktreePool | None) -> None:
        self.store = store
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        repos = stats.repo_names(self.store)
        info = GaugeMetricFamily(
            "dispatcher_build_info", "The daemon's version (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield from self._jobs(repos)
        yield _histogram(
            "dispatcher_job_duration_seconds",
            "Agent run time of jobs that ran (started to finished), by repo and agent",
            ["repo", "agent"], DURATION_BUCKETS, stats.job_durations(self.store, DURATION_BUCKETS),
        )  # fmt: skip
        yield _histogram(
            "dispatcher_spawn_latency_seconds",
            "Claimed to agent started (worktree, copy/link, setup:, spawn), by repo",
            ["repo"], SPAWN_BUCKETS, stats.spawn_latencies(self.store, SPAWN_BUCKETS),
        )  # fmt: skip
        yield _family(
            CounterMetricFamily("dispatcher_agent_cost_usd",
                                "Agents' reported cost in USD, by repo and agent",
                                labels=["repo", "agent"]),
            stats.costs(self.store),
        )  # fmt: skip
        yield _family(
            GaugeMetricFamily("dispatcher_events",
                              "Stored events by repo, source and outcome (pending, job, "
                              "no_job, unmatched)", labels=["repo", "source", "outcome"]),
            stats.events(self.store),
        )  # fmt: skip
        yield _family(
            CounterMetricFamily("dispatcher_notification_deliveries",
                                "Notification deliveries (final outcome per target) by repo, "
                                "target type and outcome (delivered, failed)",
                                labels=["repo", "target", "outcome"]),
            stats.deliveries(self.store),
        )  # fmt: skip
        idle = GaugeMetricFamily(
            "dispatcher_pool_idle_trees", "Warm worktrees ready for a job, by repo", labels=["repo"]
        )
        for repo in repos:
            idle.add_metric([repo], len(self.pool.idle(repo)) if self.pool is not None else 0)
        yield idle
        trips = CounterMetricFamily(
            "dispatcher_store_transactions",
            "Store transactions (one session each) by kind (read, write); since the daemon started",
            labels=["kind"],
        )
        done = self.store.transactions
        trips.add_metric(["read"], done.reads)
        trips.add_metric(["write"], done.writes)
        yield trips

    def _jobs(self, repos: Iterable[str]) -> Iterator[Metric]:
        counts = stats.job_states(self.store)
        jobs = GaugeMetricFamily(
            "dispatcher_jobs", "Jobs by repo and state", labels=["repo", "state"]
        )
        queue = GaugeMetricFamily(
            "dispatcher_queue_depth", "Jobs queued (waiting for a slot), by repo", labels=["repo"]
        )
        for repo in repos:
            for state in JobState:
                jobs.add_metric([repo, state.value], counts.get((repo, state.value), 0))
            queue.add_metric([repo], counts.get((repo, JobState.QUEUED.value), 0))
        yield jobs
        yield queue


class Metrics:
    """The daemon's registry: the store's series and the in-process ones."""

    def __init__(self, store: Store, pool: WorktreePool | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(store, pool))
        self._worktree_ready = InProcessHistogram(
            "dispatcher_worktree_ready_seconds",
            "A job's worktree asked for to ready (before copy/link and setup:), by repo and "
            "source (pool, fresh); since the daemon started",
            ["repo", "source"],
            buckets=WORKTREE_BUCKETS,
            registry=self.registry,
        )
        self._events_dropped = Counter(
            "dispatcher_events_dropped",
            "Events not stored, by source and reason (duplicate, no_repo); since the daemon "
            "started",
            ["source", "reason"],
            registry=self.registry,
        )

    def worktree_ready(self, repo: str, source: str, seconds: float) -> None:
        """The runner's hook: a job's worktree is ready."""
        self._worktree_ready.labels(repo=repo, source=source).observe(seconds)

    def event_dropped(self, source: str, reason: str) -> None:
        """The intake's hook: an event was not stored (a redelivery, or no repo for it)."""
        self._events_dropped.labels(source=source, reason=reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type: format 0.0.4, what every Prometheus
        reads (prometheus-client's CONTENT_TYPE_LATEST now names 1.0.0, whose text is the
        same for our names: UTF-8 names, its addition, are never used)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
