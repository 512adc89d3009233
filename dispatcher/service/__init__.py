"""The use-cases the API (and so the CLI) and the daemon share, grouped by resource.

:class:`Service` only composes them; each part is a module of this package:

* ``access``   bearer tokens into principals and their scopes, for the MCP face (:mod:`.access`);
* ``agents``   the agent profiles, found on PATH or not (:mod:`.agents`);
* ``doctor``   what in the set-up would make jobs fail (:mod:`.doctor`);
* ``repos``    register, list, show and unregister repos (:mod:`.repos`); their disk
  use is measured in the background (:class:`dispatcher.jobs.diskuse.DiskUse`);
* ``jobs``     submit (the one path every job takes), follow up, retry, list (:mod:`.jobs`);
* ``control``  cancel, discard and merge a job (:mod:`.control`);
* ``forges``   push a job's branch, open its pull request, on-success (:mod:`.forge`);
* ``rebases``  bring a finished job's branch onto its target's tip (:mod:`.rebase`);
* ``fetches``  ``fetch: true``: a repo's remote fetched before a job's base (:mod:`.fetches`);
* ``fixloop``  a job's PR merged or closed on the forge, its CI failures and reviews fixed
  by follow-ups, bounded (:mod:`.fixloop`, :mod:`.fixprompt`);
* ``prune``    discard finished jobs in bulk, tidy closed jobs' leftovers (:mod:`.prune`);
* ``outputs``  a job's log, diff and notice deliveries (:mod:`.outputs`);
* ``board``    the dashboard's board columns and every job's deliveries (:mod:`.board`);
* ``events``   ``POST /events``, the events stored, each repo's triggers (:mod:`.events`);
* ``issues``   the local issue inbox (:mod:`.issues`);
* ``teams``    teams: a lead, a task graph run as jobs, one integration branch, messages
  (:mod:`.teams`, :mod:`.team_messages`, :mod:`.team_prompts`);
* ``notices``  which notices a job owes and where they go (:mod:`.notices`);
* ``metrics``  ``GET /metrics``: the store's figures and the in-process ones (:mod:`.metrics`);
* ``webhooks`` forge deliveries into the intake (:mod:`dispatcher.events.webhooks`);
* ``idempotency`` the ``Idempotency-Key`` answers (:mod:`dispatcher.store.idempotency`);
* ``workers``  this daemon as a worker of its database, and the others
  (:mod:`dispatcher.cluster.membership`).

The intake (:class:`dispatcher.events.intake.Intake`) submits the jobs of
triggers through ``jobs`` too.
"""

from __future__ import annotations

from dispatcher import __version__
from dispatcher.cluster.membership import Membership
from dispatcher.cluster.peers import Peers
from dispatcher.config import Settings
from dispatcher.events.intake import Intake
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.events.webhooks import Webhooks
from dispatcher.jobs.diskuse import DiskUse
from dispatcher.jobs.pool import WorktreePool
from dispatcher.jobs.sweeper import Sweeper
from dispatcher.service.access import Access
from dispatcher.service.agents import Agents
from dispatcher.service.board import Board
from dispatcher.service.control import Control, Supervisor
from dispatcher.service.doctor import Doctor
from dispatcher.service.events import Events
from dispatcher.service.fetches import Fetches
from dispatcher.service.fixloop import FixLoop
from dispatcher.service.forge import Forges
from dispatcher.service.hub import Hubs
from dispatcher.service.issues import Issues
from dispatcher.service.jobs import Jobs
from dispatcher.service.metrics import Metrics
from dispatcher.service.notices import Notices
from dispatcher.service.outputs import Outputs
from dispatcher.service.prune import Prune
from dispatcher.service.rebase import Rebases
from dispatcher.service.repos import Repos
from dispatcher.service.teams import Teams
from dispatcher.store.database import Store
from dispatcher.store.idempotency import Idempotency
from dispatcher.store.models import Health, Job


class Service:
    """The parts, wired to one another once; the API, the daemon and tests hold this."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        supervisor: Supervisor,
        *,
        trigger_files: TriggerFiles | None = None,
        pool: WorktreePool | None = None,
        token: str | None = None,
    ) -> None:
        """``token``: the daemon's API token, which the MCP face's job tokens derive from
        (None: the MCP face refuses every token)."""
        self.settings = settings
        self.store = store
        self.access = Access(store, token, max_children=settings.mcp_max_children)
        self.trigger_files = trigger_files or TriggerFiles(store)
        self.notices = Notices(settings, store, self.trigger_files)
        self.disk_use = DiskUse(settings)  # the daemon starts its thread
        self.control = Control(settings, store, supervisor, self.notices, pool, self.disk_use)
        # Other nodes (PostgreSQL): an action on a job another node holds is asked of it.
        self.peers = Peers(settings, store)
        self.control.peers = self.peers
        self.jobs = Jobs(settings, store, supervisor, self.trigger_files, self.control)
        self.forges = Forges(settings, store, self.control)
        self.hubs = Hubs(settings, store, self.control, self.trigger_files)  # results leave
        self.control.on_closed = self.hubs.closed
        self.control.hub_name = self.hubs.remote_of
        self.fetches = Fetches(settings, self.forges._credentials, scrub=self.forges.scrub)
        self.jobs.fetches = self.fetches  # `fetch: true` repos fetched before a base
        self.rebases = Rebases(settings, store, self.control, self.jobs, self.forges, self.fetches)
        self.intake = Intake(settings, store, self.trigger_files, self.jobs)
        self.intake.prefetch = self.fetches  # fetched before the intake's submit lock
        self.repos = Repos(settings, store, self.trigger_files, pool, self.disk_use)
        self.repos.on_limits_changed = supervisor.wake  # a raised max-parallel claims now
        self.agents = Agents(settings, store, self.trigger_files)
        self.doctor = Doctor(settings, store, self.trigger_files, self.agents)
        self.outputs = Outputs(settings, store, self.peers)
        self.board = Board(store)
        self.events = Events(store, self.trigger_files, self.intake)
        self.issues = Issues(store, self.intake)
        self.webhooks = Webhooks(settings, store, self.intake)
        self.idempotency = Idempotency(store, settings.idempotency_hours)
        self.metrics = Metrics(store, pool)
        self.intake.on_dropped = self.metrics.event_dropped
        self.sweeper = Sweeper(settings, store, pool)  # the daemon's sweeps, and prune's orphans
        self.prune = Prune(store, self.control, self.sweeper)
        self.teams = Teams(settings, store, self.jobs, self.control, self.notices)
        self.jobs.team_messages = self.teams.for_followup  # a person's follow-up hears them
        self.fixloop = FixLoop(
            settings, store, self.trigger_files, self.jobs, self.control, self.forges,
            self.notices,
        )  # fmt: skip
        self.webhooks.on_pr_fact = self.fixloop.receive  # a job's PR merged, red, reviewed
        self.jobs.fix_counts = self.fixloop.counts
        self.control.on_unrun = self.fixloop.job_ended  # a queued fix canceled: next one
        self.workers = Membership(settings, store)  # the daemon joins at start

    def job_ended(self, job_id: int, ended: Job | None = None) -> None:
        """The runner let go of a job (its ``on_finished``): each part that waits for a
        job's end hears of it. ``ended``: the row as the runner recorded the end (None:
        the parts that need it read it); with it, a trivial job's end reads nothing."""
        self.disk_use.job_ended(job_id)  # returns at once: measured in the background
        self.notices.job_ended(job_id)  # no read when nowhere to send a notice
        self.teams.job_ended(job_id, ended)  # a member's task moves on (on its own thread)
        self.hubs.job_ended(job_id, ended)  # its branch to its repo's hub (own thread)
        if ended is None or ended.on_success:  # only a job that asked can be pushed
            # on-success: push, pull request (own thread); then its fix loop's next step
            self.forges.job_ended(job_id, then=lambda: self.fixloop.job_ended(job_id))
        else:
            self.fixloop.job_ended(job_id, ended)  # a chain's queued fix goes next

    def job_taken_over(self, job_id: int) -> None:
        """A dead node's job that this node ended when it took it over (the runner's
        ``on_taken_over``): its notice, and its fix chain's next step. Not its team's
        step, hub or forge push: those are in the dead node's clone (docs/cluster.md)."""
        self.notices.job_ended(job_id)
        self.fixloop.job_ended(job_id)

    def health(self) -> Health:
        return Health(version=__version__, jobs_active=self.store.count_active())
