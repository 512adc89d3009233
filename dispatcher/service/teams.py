"""Teams: a goal, a lead job and a task graph whose tasks run as jobs and merge into one branch.

Every team operation is a method here, called the same way by the REST routes,
the CLI (through them) and the MCP tools: create, add a task, change its
blockers, message, read, signal, submit and decide a plan, retry, shut down,
merge. docs/teams.md tells the whole story.

How a team moves on. A task starts (:meth:`Teams.advance`) when every task it
is blocked by is done, the team is within its budget and its max-parallel:
its job is submitted through :meth:`dispatcher.service.jobs.Jobs.submit` with
the team's integration branch as its base (the branch's tip at that moment).
The runner's end of a job (:meth:`Teams.job_ended`, the daemon's ``on_finished``
hook) moves the task on: integrated into the team's branch with the merge engine
(merge-tree check, compare-and-swap), or failed with the reason; and the next
tasks start. One lock per team serializes those steps.

Exactly once across ``kill -9``. A task is moved ``starting`` (attempts counted)
before its job is made, and the job carries its task id: a restart
(:meth:`Teams.resume`) links a ``starting`` task to the job it made, or makes
it, never two. An ``integrating`` task's merge is finished by the merge journal
(:meth:`dispatcher.service.control.Control.recover_merges`) and recorded here; a
``conflicted`` task a crash left without its conflict-fix task gets it then.

A conflict-fix task is done only when the conflicted task's work (its job's head)
is on the integration branch; else it fails, saying so. The jobs a team's jobs
create through MCP (their children, :meth:`TeamStore.children`) count in its
cost and max-parallel, and its shutdown cancels them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dispatcher import faults
from dispatcher.agents import profiles
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidInput, InvalidState, MergeConflict
from dispatcher.git import journal as merge_journal
from dispatcher.git import merge as git_merge
from dispatcher.git import refs, worktrees
from dispatcher.lifecycle import ACTIVE, FINISHED, JobState
from dispatcher.notify.notices import TEAM_BLOCKED, JobNotice
from dispatcher.service.control import Control
from dispatcher.service.jobs import Jobs
from dispatcher.service.notices import Notices
from dispatcher.service.team_messages import Mailbox
from dispatcher.service.team_prompts import (
    Voice,
    conflict_prompt,
    lead_prompt,
    member_prompt,
    plan_answer,
)
from dispatcher.store.database import Store
from dispatcher.store.models import FollowupCreate, Job, JobCreate, MergeRequest
from dispatcher.store.team_models import (
    OPEN_TASK_STATES,
    MessageCreate,
    MessagePublic,
    PlanDecision,
    SignalCreate,
    TaskCreate,
    TaskPublic,
    TaskState,
    Team,
    TeamAction,
    TeamCreate,
    TeamMergeRequest,
    TeamPublic,
    TeamState,
    TeamTask,
    task_public,
)
from dispatcher.store.teams import TeamStore

log = logging.getLogger(__name__)


def integration_branch(team_id: int) -> str:
    return f"dispatcher/team-{team_id}"


def find_cycle(graph: dict[int, list[int]]) -> list[int] | None:
    """A cycle of ``graph`` (task -> its blockers) as a path of ids, or None. Pure."""
    done: set[int] = set()
    for start in graph:
        if start in done:
            continue
        path: list[int] = []
        on_path: set[int] = set()
        stack: list[tuple[int, Iterable[int]]] = [(start, iter(graph.get(start, [])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(iter(children), None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if child in on_path:
                return [*path[path.index(child) :], child]
            if child not in done:
                stack.append((child, iter(graph.get(child, []))))
                path.append(child)
                on_path.add(child)
    return None


def check_graph(tasks: list[TeamTask]) -> None:
    """Every blocker is a task of the team and no task waits on itself through others."""
    ids = {t.id for t in tasks}
    for t in tasks:
        unknown = sorted(set(t.blocked_by) - ids)
        if unknown:
            listed = ", ".join(str(u) for u in unknown)
            raise InvalidInput(
                f"task {t.id or '(new)'}: unknown blocker(s) {listed}: "
                f"not tasks of team {t.team_id}",
                details={"unknown": unknown},
            )
    graph = {t.id: list(t.blocked_by) for t in tasks if t.id is not None}
    cycle = find_cycle(graph)
    if cycle is not None:
        raise InvalidInput(
            "the blockers make a cycle: " + " -> ".join(str(c) for c in cycle),
            details={"cycle": cycle},
        )


@dataclass(eq=False)
class Teams:
    settings: Settings
    store: Store
    jobs: Jobs
    control: Control
    notices: Notices
    # This daemon's node (docs/cluster.md), set by the daemon: written on each team it
    # makes (the integration branch is in its clone).
    node: str | None = None
    rows: TeamStore = field(init=False)
    mailbox: Mailbox = field(init=False)
    _locks: dict[int, threading.RLock] = field(default_factory=dict, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = TeamStore(self.store)
        self.mailbox = Mailbox(self.rows, self.settings.team_message_lease_seconds)

    def _lock(self, team_id: int) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(team_id, threading.RLock())

    # ------------------------------------------------------------ teams

    def create(self, req: TeamCreate) -> TeamPublic:
        """Make the team, its integration branch at the repo's base, and its lead job."""
        repo = self.store.repo_by_name(req.repo)
        assert repo.id is not None
        repo_path = Path(repo.path)
        if not (repo_path / ".git").exists():
            raise InvalidInput(f"repo {repo.name!r}: {repo.path} no longer holds a git repository")
        base_sha = refs.rev_parse(repo_path, repo.default_branch)
        team = self.rows.add_team(
            Team(
                repo_id=repo.id, goal=req.goal, base_sha=base_sha, lead_agent=req.lead_agent,
                lead_command=req.lead_command, budget_usd=req.budget_usd,
                max_parallel=req.max_parallel, node=self.node,
            ),
            branch_for=integration_branch,
        )  # fmt: skip
        assert team.id is not None
        try:
            worktrees.create_branch(repo_path, team.branch, base_sha)
            self._start_lead(team, repo.name)
        except DispatcherError as exc:  # the lead cannot run (unknown agent...): no team
            self.rows.update_team(team.id, state=TeamState.SHUT_DOWN, held=exc.message)
            raise
        return self.show(team.id)

    def _start_lead(self, team: Team, repo: str) -> None:
        assert team.id is not None
        lead = self.jobs.submit(
            JobCreate(
                repo=repo, agent=team.lead_agent,
                prompt=lead_prompt(team, repo, self._voice(team.lead_agent, team.lead_command)),
                command=team.lead_command, base=team.branch,
            ),
            team=(team.id, None),
        )  # fmt: skip
        self.rows.update_team(team.id, lead_job_id=lead.id)

    def _voice(self, agent: str | None, command: list[str] | None) -> Voice:
        """How the agent of a run reaches the daemon (what its prompt tells it): a
        command has the MCP server's URL and token in its environment; a profile is given
        the server if it has an MCP way (the daemon's agent settings; an unknown agent's
        submit refuses it anyway)."""
        if command:
            return "env"
        try:
            profile = profiles.resolve_profile(
                agent or self.settings.default_agent, self.settings.agents
            )
        except DispatcherError:
            return "none"
        return "mcp" if profile.mcp else "none"

    def listing(self, repo: str | None = None) -> list[TeamPublic]:
        repo_id = self.store.repo_by_name(repo).id if repo else None
        return [self._public(t, with_tasks=False) for t in self.rows.teams(repo_id)]

    def show(self, team_id: int) -> TeamPublic:
        return self._public(self.rows.team(team_id))

    def _public(self, team: Team, *, with_tasks: bool = True) -> TeamPublic:
        assert team.id is not None
        repo = self.store.repo(team.repo_id)
        jobs = self.rows.team_jobs(team.id)
        cost = self.rows.team_cost(team.id)  # its jobs' and the jobs they created
        tasks: list[TaskPublic] = []
        if with_tasks:
            rows = self.rows.tasks(team.id)
            states = {t.id: t.state for t in rows}
            by_task: dict[int, float] = {}
            for j in jobs:
                if j.task_id is not None:
                    by_task[j.task_id] = by_task.get(j.task_id, 0.0) + (j.cost_usd or 0.0)
            for t in rows:
                assert t.id is not None
                waiting_on = [b for b in t.blocked_by if states.get(b) is not TaskState.DONE]
                tasks.append(task_public(t, waiting_on=waiting_on, cost_usd=by_task.get(t.id, 0.0)))
        try:
            head = refs.branch_head(Path(repo.path), team.branch) if team.branch else None
        except DispatcherError:
            head = None
        return TeamPublic.model_validate(
            {**team.model_dump(), "repo": repo.name, "head": head, "cost_usd": cost, "tasks": tasks}
        )

    def _action(self, team_id: int, changed: bool, message: str) -> TeamAction:
        return TeamAction(team=self.show(team_id), changed=changed, message=message)

    # ------------------------------------------------------------ tasks

    def add_task(self, team_id: int, req: TaskCreate) -> TaskPublic:
        """Add a task; it starts at once if its blockers are done (and the limits allow)."""
        team = self._active(team_id)
        repo = self.store.repo(team.repo_id)
        if req.repo is not None and req.repo != repo.name:
            raise InvalidInput(
                f"team {team_id} works in repo {repo.name!r}; a task for {req.repo!r} is refused"
            )
        if req.agent is not None and req.command is not None:
            raise InvalidInput("give a task an agent or a command, not both")
        task = TeamTask(
            team_id=team_id, title=req.title, prompt=req.prompt, agent=req.agent,
            command=req.command, blocked_by=sorted(set(req.blocked_by)), owns=list(req.owns),
            requires_plan=req.requires_plan,
        )  # fmt: skip
        limit = self.settings.team_max_tasks

        def check(tasks: list[TeamTask]) -> None:
            if len(tasks) >= limit:
                raise InvalidState(
                    f"team {team_id} holds {len(tasks)} tasks, its limit "
                    "(DISPATCHER_TEAM_MAX_TASKS); no task is added"
                )
            check_graph([*tasks, task])

        task = self.rows.add_task(task, check)
        self.advance(team_id)
        return self._task_public(task.id)

    def set_blockers(self, team_id: int, task_id: int, blocked_by: list[int]) -> TaskPublic:
        """Change a waiting task's blockers (a cycle or an unknown one is refused)."""
        self._active(team_id)
        self._task_of(team_id, task_id)
        with self._lock(team_id):
            self.rows.set_blockers(task_id, sorted(set(blocked_by)), check_graph)
        self.advance(team_id)
        return self._task_public(task_id)

    def task(self, team_id: int, task_id: int) -> TaskPublic:
        self._task_of(team_id, task_id)
        return self._task_public(task_id)

    def _task_public(self, task_id: int | None) -> TaskPublic:
        assert task_id is not None
        task = self.rows.task(task_id)
        for t in self.show(task.team_id).tasks:
            if t.id == task_id:
                return t
        raise AssertionError("a task not in its team")  # pragma: no cover

    def _task_of(self, team_id: int, task_id: int) -> TeamTask:
        task = self.rows.task(task_id)
        if task.team_id != team_id:
            raise InvalidInput(f"task {task_id} is not a task of team {team_id}")
        return task

    def _active(self, team_id: int) -> Team:
        team = self.rows.team(team_id)
        if team.state is not TeamState.ACTIVE:
            raise InvalidState(f"team {team_id} is {team.state.value}; nothing starts any more")
        return team

    def retry(self, team_id: int, task_id: int) -> TeamAction:
        """A failed (or canceled) task waits again: it starts afresh from the integration
        branch's tip once its blockers are done."""
        self._active(team_id)
        with self._lock(team_id):
            task = self._task_of(team_id, task_id)
            if task.state not in (TaskState.FAILED, TaskState.CANCELED):
                raise InvalidState(
                    f"task {task_id} is {task.state.value}; only a failed or canceled task "
                    "is retried"
                )
            self.rows.move_task(
                task_id, {TaskState.FAILED, TaskState.CANCELED}, TaskState.WAITING, error=None,
                plan=None, plan_approved=False, feedback=None, signal=None, signal_reason=None,
            )  # fmt: skip
        self.advance(team_id)
        return self._action(team_id, True, f"task {task_id} retried")

    # ------------------------------------------------------------ moving on

    def advance(self, team_id: int) -> None:
        """Start every waiting task whose blockers are done, within the team's budget and
        max-parallel (the repo's own limits then apply to their jobs)."""
        with self._lock(team_id):
            team = self.rows.team(team_id)
            if team.state is not TeamState.ACTIVE:
                return
            tasks = self.rows.tasks(team_id)
            done = {t.id for t in tasks if t.state is TaskState.DONE}
            ready = [
                t for t in tasks
                if t.state is TaskState.WAITING and all(b in done for b in t.blocked_by)
            ]  # fmt: skip
            if not ready:
                return
            over = self._over_budget(team)
            if over is not None:
                self._hold(team, f"{over}; {len(ready)} task(s) wait")
                return
            if team.held is not None:
                self.rows.update_team(team_id, held=None)
            children = sum(j.state in ACTIVE for j in self.rows.children(team_id))
            places = (
                (team.max_parallel or len(tasks))
                - children
                - sum(t.state in OPEN_TASK_STATES for t in tasks)
            )
            for task in ready[: max(places, 0)]:
                assert task.id is not None
                task = self.rows.move_task(
                    task.id, TaskState.WAITING, TaskState.STARTING, attempts=task.attempts + 1
                )
                self._launch(team, task)

    def _over_budget(self, team: Team) -> str | None:
        """Why nothing paid may start now (the team's budget is spent), or None."""
        assert team.id is not None
        if team.budget_usd is None:
            return None
        spent = self.rows.team_cost(team.id)
        if spent < team.budget_usd:
            return None
        return f"over budget: ${spent:.4f} spent of ${team.budget_usd:.4f}"

    def _hold(self, team: Team, reason: str) -> None:
        """Waiting tasks do not start (the budget): said once to the lead and a person."""
        assert team.id is not None
        if team.held is not None:
            return  # said already; cleared when tasks start again
        self.rows.update_team(team.id, held=reason)
        log.warning("team %s: %s", team.id, reason)
        self.mailbox.notify(team.id, "lead", reason)
        self.mailbox.notify(team.id, "person", reason)
        self._announce(team, None, "budget", reason)

    def _launch(self, team: Team, task: TeamTask) -> None:
        """Make the job of a ``starting`` task: its first run, or (a plan decided) the
        follow-up of its last run. Then it is ``running``; if the job cannot be made,
        ``failed`` with the reason."""
        assert team.id is not None and task.id is not None
        repo = self.store.repo(team.repo_id)
        messages, delivered = self.mailbox.for_prompt(team.id, f"task:{task.id}")
        try:
            if task.job_id is not None and task.feedback is not None:  # a plan decided
                prompt = plan_answer(
                    task, approved=task.plan_approved, feedback=task.feedback, messages=messages
                )
                job_id = self.jobs.followup(
                    task.job_id, FollowupCreate(prompt=prompt), team_messages=False
                ).job.id
            else:
                job_id = self.jobs.submit(
                    JobCreate(
                        repo=repo.name,
                        prompt=member_prompt(
                            team, task, messages=messages,
                            voice=self._voice(task.agent, task.command),
                        ),
                        agent=task.agent, command=task.command, base=team.branch,
                    ),
                    team=(team.id, task.id),
                ).id  # fmt: skip
        except DispatcherError as exc:
            self.mailbox.release_prompt(team.id, f"task:{task.id}")  # not in any prompt
            self.rows.move_task(task.id, TaskState.STARTING, TaskState.FAILED, error=exc.message)
            self._tell_lead(team, f"task {task.id} ({task.title}) could not start: {exc.message}")
            return
        faults.reach("team.job-made")  # the job is made; the task does not name it yet
        delivered()  # in its prompt now (a restart that finds the job confirms them)
        self.rows.move_task(task.id, TaskState.STARTING, TaskState.RUNNING, job_id=job_id)
        log.info("team %s: task %s started as job %s", team.id, task.id, job_id)

    def job_ended(self, job_id: int, ended: Job | None = None) -> None:
        """The runner let go of a job (the daemon's hook): if it is a team member's, its
        task moves on, and what may start now starts, on a thread of its own (a merge
        into the integration branch does not hold the runner's worker). ``ended``: its
        row as the runner recorded its end (no read then; a member's end reads it again
        under the team's lock). Never raises."""
        try:
            job = ended if ended is not None else self.store.job(job_id)
        except Exception:
            log.exception("job %s: cannot tell whether a team waits for it", job_id)
            return
        if job.state in ACTIVE:
            return
        if job.team_id is not None and job.task_id is not None:
            threading.Thread(
                target=self._member_ended_quietly, args=(job,), name="team", daemon=True
            ).start()
        elif job.team_id is None and job.parent_id is not None:  # a place may be free
            threading.Thread(
                target=self._child_ended_quietly, args=(job,), name="team", daemon=True
            ).start()

    def _child_ended_quietly(self, job: Job) -> None:
        try:
            team_id = self.rows.team_of_job(job)
            if team_id is not None:
                self.advance(team_id)
        except Exception:
            log.exception("job %s: its team could not move on", job.id)

    def _member_ended_quietly(self, job: Job) -> None:
        try:
            self._member_ended(job)
        except Exception:
            log.exception("job %s: its team could not move on", job.id)

    def _member_ended(self, job: Job) -> None:
        assert job.team_id is not None and job.task_id is not None and job.id is not None
        team_id, task_id = job.team_id, job.task_id
        with self._lock(team_id):
            job = self.store.job(job.id)  # as it is now (a restart's reconcile may have merged it)
            task = self.rows.task(task_id)
            team = self.rows.team(team_id)
            if task.state is not TaskState.RUNNING or task.job_id != job.id:
                return  # not its current run (or dealt with already: a restart, a shutdown)
            if job.state is JobState.SUCCEEDED or (
                job.state is JobState.MERGED and job.merged_into == team.branch
            ):
                self._succeeded(team, task, job)
            elif job.state in FINISHED or job.state is JobState.DISCARDED:
                reason = f"job {job.id} {job.state.value}" + (f": {job.error}" if job.error else "")
                assert task.id is not None
                self.rows.move_task(task.id, TaskState.RUNNING, TaskState.FAILED, error=reason)
                self._tell_lead(
                    team, f"task {task.id} ({task.title}) failed: {reason}; its dependants wait"
                )
        self.advance(team_id)

    def _succeeded(self, team: Team, task: TeamTask, job: Job) -> None:
        assert team.id is not None and task.id is not None and job.id is not None
        if task.requires_plan and not task.plan_approved:
            plan = task.plan or job.summary or "(no plan was submitted; see the job's log)"
            self.rows.move_task(
                task.id, TaskState.RUNNING, TaskState.PLAN_REVIEW, plan=plan, feedback=None
            )
            self._tell_lead(
                team,
                f"task {task.id} ({task.title}) waits for its plan to be approved:\n{plan}",
                kind="plan",
            )
            return
        if job.state is JobState.MERGED or not job.commits_ahead:
            unfixed = self._unfixed(team, task)
            if unfixed is not None:
                self._fix_failed(team, task, TaskState.RUNNING, unfixed)
                return
            self.rows.move_task(task.id, TaskState.RUNNING, TaskState.DONE)
            self._done(team, task)
            return
        self.rows.move_task(task.id, TaskState.RUNNING, TaskState.INTEGRATING)
        self._integrate(team, self.rows.task(task.id), job)

    def _integrate(self, team: Team, task: TeamTask, job: Job) -> None:
        """Merge an ``integrating`` task's branch into the integration branch: done, or a
        conflict (nothing moves) that a conflict-fix task for its agent will integrate."""
        assert team.id is not None and task.id is not None and job.id is not None
        team_id = team.id

        def landed(_: Job) -> None:  # before the member's worktree is dropped: start the next
            self._integrated(team, task)
            self.advance(team_id)

        try:
            result = self.control.merge(job.id, MergeRequest(into=team.branch), landed=landed)
        except MergeConflict as exc:
            files = [str(f) for f in exc.details.get("files", [])]
            conflicted = self.rows.move_task(
                task.id, TaskState.INTEGRATING, TaskState.CONFLICTED, error=exc.message
            )
            faults.reach("team.conflicted")  # conflicted; its fix task is not made yet
            self._add_fix(team, conflicted, job, files)
            return
        except DispatcherError as exc:
            self.rows.move_task(
                task.id, TaskState.INTEGRATING, TaskState.FAILED,
                error=f"could not merge into {team.branch}: {exc.message}",
            )  # fmt: skip
            self._tell_lead(team, f"task {task.id} ({task.title}) was not merged: {exc.message}")
            return
        log.info("team %s: task %s integrated: %s", team.id, task.id, result.message)
        self._integrated(team, task)  # already merged (no landing): done all the same

    def _add_fix(self, team: Team, task: TeamTask, job: Job, files: list[str]) -> None:
        """The conflict-fix task of a ``conflicted`` task (made once: a restart makes it
        for a conflicted task a crash left without one)."""
        assert team.id is not None and task.id is not None
        fix = TeamTask(
            team_id=team.id, title=f"fix conflict of task {task.id}: {task.title}"[:200],
            prompt=conflict_prompt(task, job.branch, team.branch, files), agent=task.agent,
            command=task.command, owns=list(task.owns), fix_of=task.id,
        )  # fmt: skip
        fix = self.rows.add_task(fix, lambda tasks: None)
        self._tell_lead(
            team,
            f"task {task.id} ({task.title}) conflicts with {team.branch} in "
            f"{', '.join(files) or '(see its error)'}; conflict-fix task {fix.id} integrates it",
        )

    def _unfixed(self, team: Team, task: TeamTask) -> str | None:
        """Why the conflict-fix ``task`` is not done: the work of the conflicted task it
        fixes (or of the one that fixed, up the chain) is not on the integration branch.
        None: it is, or ``task`` fixes none."""
        repo_path = Path(self.store.repo(team.repo_id).path)
        tip = refs.branch_head(repo_path, team.branch)
        fixed_id = task.fix_of
        while fixed_id is not None:
            fixed = self.rows.task(fixed_id)
            if fixed.state is not TaskState.CONFLICTED or fixed.job_id is None:
                return None
            job = self.store.job(fixed.job_id)
            head = job.head_sha or (refs.branch_head(repo_path, job.branch) if job.branch else None)
            if head is not None and (tip is None or not refs.is_ancestor(repo_path, head, tip)):
                return (
                    f"conflict-fix task {task.id} ended without task {fixed.id}'s work "
                    f"({job.branch} at {head[:12]}) on {team.branch}: merge that branch "
                    f"and commit; task {fixed.id} stays conflicted"
                )
            fixed_id = fixed.fix_of
        return None

    def _fix_failed(self, team: Team, task: TeamTask, state: TaskState, reason: str) -> None:
        assert task.id is not None
        self.rows.move_task(task.id, state, TaskState.FAILED, error=reason)
        self._tell_lead(team, f"task {task.id} ({task.title}) failed: {reason}")

    def _integrated(self, team: Team, task: TeamTask) -> None:
        """An ``integrating`` task's work is on the integration branch: it is done (a
        conflict-fix task only if the conflicted task's work is there too)."""
        assert task.id is not None
        if self.rows.task(task.id).state is TaskState.INTEGRATING:
            unfixed = self._unfixed(team, task)
            if unfixed is not None:
                self._fix_failed(team, task, TaskState.INTEGRATING, unfixed)
                return
            self.rows.move_task(task.id, TaskState.INTEGRATING, TaskState.DONE)
            self._done(team, task)

    def _done(self, team: Team, task: TeamTask) -> None:
        """A task is done: so is the conflicted task it fixed (and the one that fixed)."""
        assert team.id is not None
        self._tell_lead(team, f"task {task.id} ({task.title}) is done", kind="notice")
        while task.fix_of is not None:
            fixed = self.rows.task(task.fix_of)
            if fixed.state is not TaskState.CONFLICTED:
                return
            assert fixed.id is not None
            task = self.rows.move_task(
                fixed.id, TaskState.CONFLICTED, TaskState.DONE,
                error=f"integrated by conflict-fix task {task.id}",
            )  # fmt: skip

    def _tell_lead(self, team: Team, text: str, *, kind: str = "notice") -> None:
        assert team.id is not None
        try:
            self.mailbox.notify(team.id, "lead", text, kind=kind)
        except Exception:
            log.exception("team %s: could not tell the lead: %s", team.id, text)

    # ------------------------------------------------------------ a member's voice

    def check_child(self, job_id: int) -> None:
        """Refused (one line) when ``job_id`` works for a team (its own job, or a child
        of one) that may start nothing now: shut down, or over its budget. Before a job
        token's ``create_job``: a child is counted as the team's."""
        team_id = self.rows.team_of_job(self.store.job(job_id))
        if team_id is None:
            return
        team = self.rows.team(team_id)
        if team.state is not TeamState.ACTIVE:
            raise InvalidState(f"team {team_id} is {team.state.value}; its jobs create no jobs")
        over = self._over_budget(team)
        if over is not None:
            raise InvalidState(f"team {team_id} is {over}; its jobs create no jobs")

    def for_followup(self, job: Job) -> tuple[str, Callable[[bool], None]]:
        """The waiting messages of the lead or member whose job ``job`` is, as a prompt
        section, and what settles them: ``settle(True)`` once the follow-up's job is made
        marks them delivered, ``settle(False)`` (it could not be made) frees them for
        reads (a person's follow-up of a team's job: :meth:`.jobs.Jobs.followup`)."""
        team_id = job.team_id
        assert team_id is not None
        who = "lead" if job.task_id is None else f"task:{job.task_id}"
        text, delivered = self.mailbox.for_prompt(team_id, who)

        def settle(made: bool) -> None:
            if made:
                delivered()
            elif text:
                self.mailbox.release_prompt(team_id, who)

        return text, settle

    def message(self, team_id: int, req: MessageCreate) -> list[MessagePublic]:
        return self.mailbox.send(team_id, req)

    def read(
        self,
        team_id: int,
        recipient: str,
        *,
        wait_s: float = 0.0,
        limit: int = 100,
        ack: int | None = None,
    ) -> list[MessagePublic]:
        return self.mailbox.read(team_id, recipient, wait_s=wait_s, limit=limit, ack=ack)

    def messages_log(self, team_id: int, limit: int = 200) -> list[MessagePublic]:
        """The team's last ``limit`` messages, oldest first, delivered or not, handing none
        over (the dashboard's team page; a read is :meth:`read`)."""
        self.rows.team(team_id)  # NotFound for a team that does not exist
        return [MessagePublic.model_validate(m) for m in self.rows.messages(team_id, limit)]

    def signal(self, team_id: int, task_id: int, req: SignalCreate) -> TaskPublic:
        """A member says it is blocked, needs a review, or is done: the lead is told (a
        ``blocked`` also notifies a person through the notification targets)."""
        task = self._task_of(team_id, task_id)
        team = self.rows.team(team_id)
        self.rows.update_task(task_id, signal=req.signal, signal_reason=req.reason)
        self._tell_lead(
            team, f"task {task_id} ({task.title}) signals {req.signal}: {req.reason}", kind="signal"
        )
        if req.signal == "blocked":
            self.mailbox.notify(team_id, "person", f"task {task_id} is blocked: {req.reason}")
            self._announce(team, task, TEAM_BLOCKED, req.reason)
        return self._task_public(task_id)

    def _announce(self, team: Team, task: TeamTask | None, state: str, reason: str) -> None:
        """A notification about the team (through the repo's and the daemon's targets)."""
        notifier = self.notices.notifier
        job_id = (task.job_id if task is not None else None) or team.lead_job_id
        if notifier is None or job_id is None:
            return
        title = f"team {team.id}" + (f" task {task.id}: {task.title}" if task else f": {team.goal}")
        notifier.notify(
            JobNotice(
                job_id=job_id, repo=self.store.repo(team.repo_id).name, state=state,
                branch=team.branch, prompt=title, summary=None, error=reason,
                url=f"{self.settings.api_url}/teams/{team.id}",
            )
        )  # fmt: skip

    # ------------------------------------------------------------ plans

    def submit_plan(self, team_id: int, task_id: int, plan: str) -> TaskPublic:
        """A member's plan, for the lead or a person to approve."""
        task = self._task_of(team_id, task_id)
        if not task.requires_plan:
            raise InvalidState(f"task {task_id} does not require a plan")
        if task.state not in (TaskState.RUNNING, TaskState.PLAN_REVIEW) or task.plan_approved:
            raise InvalidState(f"task {task_id} is {task.state.value}; no plan is asked of it")
        self.rows.update_task(task_id, plan=plan, feedback=None)
        self._tell_lead(
            self.rows.team(team_id),
            f"task {task_id} ({task.title}) submitted a plan:\n{plan}",
            kind="plan",
        )
        return self._task_public(task_id)

    def decide_plan(self, team_id: int, task_id: int, req: PlanDecision) -> TeamAction:
        """Approve (the member goes on) or reject (it plans again) with feedback; a run
        still going hears it as a message, an ended one is continued with it."""
        team = self._active(team_id)
        with self._lock(team_id):
            task = self._task_of(team_id, task_id)
            if not task.requires_plan or task.plan_approved:
                raise InvalidState(f"task {task_id} has no plan waiting for a decision")
            if task.plan is None:
                raise InvalidState(f"task {task_id} has not submitted a plan yet")
            verdict = "approved" if req.approve else "rejected"
            say = f"your plan was {verdict} by the {req.by}" + (
                f": {req.feedback}" if req.feedback else ""
            )
            if task.state is TaskState.PLAN_REVIEW:
                over = self._over_budget(team)  # the answer is a paid run, as a start is
                if over is not None:
                    self._hold(team, f"{over}; task {task_id}'s plan waits for its decision")
                    raise InvalidState(
                        f"team {team_id} is {over}: task {task_id}'s plan is not decided "
                        "(its answer would start a run)"
                    )
                task = self.rows.move_task(
                    task_id, TaskState.PLAN_REVIEW, TaskState.STARTING,
                    plan_approved=req.approve, feedback=req.feedback,
                    plan=task.plan if req.approve else None,
                )  # fmt: skip
                self._launch(team, task)
            elif task.state is TaskState.RUNNING:
                self.rows.update_task(
                    task_id, plan_approved=req.approve, feedback=req.feedback,
                    plan=task.plan if req.approve else None,
                )  # fmt: skip
                self.mailbox.notify(team_id, f"task:{task_id}", say, kind="plan")
            else:
                raise InvalidState(f"task {task_id} is {task.state.value}; no plan to decide")
        return self._action(team_id, True, f"task {task_id}: plan {verdict}")

    # ------------------------------------------------------------ the end

    def shutdown(self, team_id: int) -> TeamAction:
        """Cancel every running member (and the lead); nothing starts any more. The
        integration branch is left as it is."""
        with self._lock(team_id):
            team = self.rows.team(team_id)
            if team.state is TeamState.SHUT_DOWN:
                return self._action(team_id, False, f"team {team_id} is already shut down")
            self.rows.update_team(team_id, state=TeamState.SHUT_DOWN)
            stop: list[int] = []
            for task in self.rows.tasks(team_id):
                assert task.id is not None
                if task.state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELED):
                    continue
                if task.state is TaskState.INTEGRATING:
                    continue  # its merge finishes (and is recorded) by itself
                self.rows.move_task(task.id, task.state, TaskState.CANCELED, error="team shut down")
                if task.job_id is not None:
                    stop.append(task.job_id)
            if team.lead_job_id is not None:
                stop.append(team.lead_job_id)
            stop += [j.id for j in self.rows.children(team_id) if j.id is not None]
        canceled = 0
        for job_id in stop:
            if self.store.job(job_id).state in ACTIVE:
                try:
                    self.control.cancel(job_id)
                    canceled += 1
                except DispatcherError as exc:
                    log.info("team %s: job %s not canceled: %s", team_id, job_id, exc.message)
        return self._action(
            team_id, True,
            f"team {team_id} shut down: {canceled} job(s) canceled; {team.branch} left as it is",
        )  # fmt: skip

    def merge(self, team_id: int, req: TeamMergeRequest) -> TeamAction:
        """Land the integration branch on the repo's default branch (or ``into``) with the
        merge engine, as a person merges a job."""
        with self._lock(team_id):
            team = self.rows.team(team_id)
            repo = self.store.repo(team.repo_id)
            repo_path = Path(repo.path)
            head = refs.branch_head(repo_path, team.branch)
            if head is None:
                raise InvalidState(f"team {team_id}: its branch {team.branch} no longer exists")
            if head == team.base_sha:
                raise InvalidState(f"team {team_id}: {team.branch} holds no work yet")
            target = req.into or repo.default_branch
            journal = self.settings.merges_dir / f"team-{team_id}.json"
            subject = (team.goal.strip().splitlines() or ["(no goal)"])[0][:72]
            new = git_merge.merge(
                repo_path, strategy=req.strategy, target_branch=target, source=head,
                base=team.base_sha, message=f"Merge team {team_id}: {subject}\n",
                author_name=self.settings.commit_author_name,
                author_email=self.settings.commit_author_email, journal=journal,
                label=f"team-{team_id}",
            )  # fmt: skip
            merge_journal.discard(journal)
        return self._action(
            team_id, True, f"team {team_id}: {team.branch} merged into {target} at {new[:12]}"
        )

    # ------------------------------------------------------------ restart

    def resume(self, node: str | None = None) -> None:
        """At start-up, after the merges a crash left are recovered: every active team's
        half-made steps are finished (a ``starting`` task linked to the job it made, or
        that job made; a lead never started, started) and its ended jobs recorded.
        ``node``: this daemon's; only its teams (and those made before teams recorded
        their node): another node's integration branch is in its own clone."""
        for team in self.rows.teams(node=node):
            if team.state is not TeamState.ACTIVE or team.id is None:
                continue
            try:
                self._resume_team(team)
            except Exception:
                log.exception("team %s: could not be resumed", team.id)

    def _newest_prompt(self, team_id: int, member: str) -> str | None:
        """The prompt of the newest job of ``member`` (``lead`` or ``task:<id>``)."""
        if member == "lead":
            jobs = [j for j in self.rows.team_jobs(team_id) if j.task_id is None]
            return jobs[-1].prompt if jobs else None
        kind, _, number = member.partition(":")
        if kind != "task" or not number.isdigit():
            return None
        job = self.rows.newest_job_of_task(int(number))
        return job.prompt if job is not None else None

    def _resume_team(self, team: Team) -> None:
        assert team.id is not None
        repo = self.store.repo(team.repo_id)
        if refs.branch_head(Path(repo.path), team.branch) is None:  # moved on, it stays
            worktrees.create_branch(Path(repo.path), team.branch, team.base_sha)
        if team.lead_job_id is None:
            lead = next((j for j in self.rows.team_jobs(team.id) if j.task_id is None), None)
            if lead is not None:
                self.rows.update_team(team.id, lead_job_id=lead.id)
            else:
                self._start_lead(team, repo.name)
        with self._lock(team.id):
            for task in self.rows.tasks(team.id):
                assert task.id is not None
                if task.state is TaskState.STARTING:
                    made = self.rows.newest_job_of_task(task.id)
                    if made is not None and made.id != task.job_id:
                        self.mailbox.prompt_delivered(team.id, f"task:{task.id}")
                        self.rows.move_task(
                            task.id, TaskState.STARTING, TaskState.RUNNING, job_id=made.id
                        )
                    else:
                        self._launch(team, task)
                elif task.state is TaskState.INTEGRATING and task.job_id is not None:
                    job = self.store.job(task.job_id)
                    if job.state is JobState.MERGED:
                        self._integrated(team, task)
                    else:
                        self._integrate(team, task, job)
            tasks = self.rows.tasks(team.id)
            fixed = {t.fix_of for t in tasks}
            for task in tasks:  # conflicted, and the crash came before its fix was made
                if task.state is TaskState.CONFLICTED and task.id not in fixed and task.job_id:
                    job = self.store.job(task.job_id)
                    head = job.head_sha or (
                        refs.branch_head(Path(repo.path), job.branch) if job.branch else None
                    )
                    tip = refs.branch_head(Path(repo.path), team.branch)
                    files = (
                        git_merge.conflicting_files(Path(repo.path), tip, head)
                        if head and tip else []
                    )  # fmt: skip
                    self._add_fix(team, task, job, files)
            running = [t.job_id for t in self.rows.tasks(team.id) if t.state is TaskState.RUNNING]
            self.mailbox.settle_prompts(team.id, partial(self._newest_prompt, team.id))
        for job_id in running:
            if job_id is not None:
                job = self.store.job(job_id)
                if job.state not in ACTIVE:  # ended while no daemon ran
                    self._member_ended(job)
        self.advance(team.id)
