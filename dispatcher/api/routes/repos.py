from __future__ import annotations

from fastapi import APIRouter, status

from dispatcher.api.deps import ServiceDep
from dispatcher.models import RepoCreate, RepoPublic

router = APIRouter(prefix="/repos", tags=["repos"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Register a local git repository")
def add_repo(body: RepoCreate, service: ServiceDep) -> RepoPublic:
    return service.add_repo(body)


@router.get("", summary="List registered repositories")
def list_repos(service: ServiceDep) -> list[RepoPublic]:
    return service.repos()


@router.get("/{name}", summary="Show one repository and its job counts")
def show_repo(name: str, service: ServiceDep) -> RepoPublic:
    return service.repo(name)


@router.delete("/{name}", summary="Unregister a repository (refused while it has active jobs)")
def remove_repo(name: str, service: ServiceDep) -> RepoPublic:
    return service.remove_repo(name)
