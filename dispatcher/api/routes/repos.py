"""Routes of repos: register, change settings, list, show (with trigger errors), unregister;
file an issue."""

from __future__ import annotations

from fastapi import APIRouter, status

from dispatcher.api.deps import IdempotencyDep, ServiceDep
from dispatcher.store.models import IssueCreate, IssuePublic, RepoCreate, RepoPublic, RepoUpdate

router = APIRouter(prefix="/repos", tags=["repos"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Register a local git repository")
def add_repo(body: RepoCreate, service: ServiceDep, idem: IdempotencyDep) -> RepoPublic:
    return service.repos.add(body, idem=idem)


@router.get("", summary="List registered repositories")
def list_repos(service: ServiceDep) -> list[RepoPublic]:
    return service.repos.all()


@router.get("/{name}", summary="Show one repository and its job counts")
def show_repo(name: str, service: ServiceDep) -> RepoPublic:
    return service.repos.get(name)


@router.patch(
    "/{name}",
    summary="Change a repository's settings (fields sent change; null: back to the default)",
)
def update_repo(name: str, body: RepoUpdate, service: ServiceDep) -> RepoPublic:
    return service.repos.update(name, body)


@router.delete("/{name}", summary="Unregister a repository (refused while it has active jobs)")
def remove_repo(name: str, service: ServiceDep) -> RepoPublic:
    return service.repos.remove(name)


@router.post(
    "/{name}/issues",
    status_code=status.HTTP_201_CREATED,
    summary="File an issue in the local inbox (an `issues` `opened` event)",
)
def file_issue(
    name: str, body: IssueCreate, service: ServiceDep, idem: IdempotencyDep
) -> IssuePublic:
    return service.issues.file(name, body, idem=idem)


@router.get("/{name}/issues", summary="The repo's local issues, newest first, with their jobs")
def list_issues(name: str, service: ServiceDep) -> list[IssuePublic]:
    return service.issues.all(name)
