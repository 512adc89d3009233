"""The lock files pin the whole dependency set, agree with pyproject.toml and each other, and
``scripts/install`` installs from them only when they (or pyproject.toml) changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_LOCK = REPO_ROOT / "requirements-dev.lock"
RUNTIME_LOCK = REPO_ROOT / "requirements.lock"
BUILD_LOCK = REPO_ROOT / "requirements-build.lock"


def _pins(lock: Path) -> dict[str, tuple[Requirement, list[str]]]:
    """name -> (the pinned requirement, its hashes), from a pip requirements file."""
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    pins: dict[str, tuple[Requirement, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --")
        hashes = [o.removeprefix("hash=") for o in options if o.startswith("hash=")]
        req = Requirement(spec)
        pins[canonicalize_name(req.name)] = (req, hashes)
    return pins


def _version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return spec.version


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _declared(group: str) -> list[Requirement]:
    data = _pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    if group == "runtime":
        return [Requirement(r) for r in project["dependencies"]]
    if group == "dev":
        return [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    build = data["build-system"]
    assert isinstance(build, dict)
    return [Requirement(r) for r in build["requires"]]


@pytest.mark.parametrize("lock", [DEV_LOCK, RUNTIME_LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(lock: Path) -> None:
    pins = _pins(lock)
    assert pins
    for req, hashes in pins.values():
        _version(req)
        assert hashes, f"{lock.name}: {req} has no --hash"
        assert all(h.startswith("sha256:") for h in hashes)


@pytest.mark.parametrize(
    ("lock", "groups"),
    [(DEV_LOCK, ["runtime", "dev", "build"]), (RUNTIME_LOCK, ["runtime"]), (BUILD_LOCK, ["build"])],
    ids=lambda v: v.name if isinstance(v, Path) else "+".join(v),
)
def test_lock_satisfies_what_pyproject_declares(lock: Path, groups: list[str]) -> None:
    pins = _pins(lock)
    for group in groups:
        for declared in _declared(group):
            name = canonicalize_name(declared.name)
            assert name in pins, f"{lock.name} lacks {declared} ({group})"
            version = _version(pins[name][0])
            assert declared.specifier.contains(version, prereleases=True), (
                f"{lock.name} pins {name}=={version}, pyproject wants {declared}"
            )


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_the_locks_agree_with_the_dev_lock(lock: Path) -> None:
    dev = _pins(DEV_LOCK)
    for name, (req, hashes) in _pins(lock).items():
        assert name in dev, f"{name} is in {lock.name} but not in {DEV_LOCK.name}"
        assert _version(req) == _version(dev[name][0]), name
        assert set(hashes) == set(dev[name][1]), name


def test_the_suite_runs_on_the_locked_versions() -> None:
    """What this interpreter has installed is what the lock pins (the runtime set, all of it)."""
    env = default_environment()
    runtime = _pins(RUNTIME_LOCK)
    for name, (req, _) in _pins(DEV_LOCK).items():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            assert name not in runtime, f"{name} (runtime) is not installed"
            continue
        assert installed == _version(req), f"{name} {installed} installed, lock has {req}"


# ------------------------------------------------------------------ scripts/install


def _stamp(root: Path) -> str:
    """What scripts/install records: sha256 of the dev lock followed by pyproject.toml."""
    data = (root / "requirements-dev.lock").read_bytes() + (root / "pyproject.toml").read_bytes()
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The files scripts/install reads, with a .venv that has no pip: any install attempt fails."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "scripts" / "install", root / "scripts" / "install")
    for name in ("pyproject.toml", "requirements-dev.lock"):
        shutil.copy2(REPO_ROOT / name, root / name)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")],
        check=True,
        timeout=60,
    )
    return root


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    # No registry at all: an install that is skipped must not need one.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    return subprocess.run(
        ["bash", str(root / "scripts" / "install")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_install_does_nothing_when_the_lock_and_pyproject_are_unchanged(
    project_copy: Path,
) -> None:
    (project_copy / ".venv" / ".install-stamp").write_text(_stamp(project_copy) + "\n")
    started = time.monotonic()
    result = _install(project_copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("changed", ["requirements-dev.lock", "pyproject.toml"])
def test_install_runs_again_when_the_lock_or_pyproject_changes(
    project_copy: Path, changed: str
) -> None:
    stamp = project_copy / ".venv" / ".install-stamp"
    stamp.write_text(_stamp(project_copy) + "\n")
    with (project_copy / changed).open("a") as f:
        f.write("\n# changed\n")
    result = _install(project_copy)
    # It tried to install (this venv has no pip, so it fails) and left no stamp behind: the
    # next run tries again rather than trusting a half-made venv.
    assert result.returncode != 0
    assert "scripts/install: installing" in result.stderr
    assert not stamp.exists()
