"""The wheel ships the migrations and they run from the installed package.

Builds a real wheel from the source tree, installs it (not editable) into a
private directory and migrates an empty database from there, with the source
tree removed from ``sys.path``.
"""

from __future__ import annotations

import configparser
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from contextlib import closing
from pathlib import Path

import pytest

from tests.migrationutil import head_revision, version_files

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]

_CHECK = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    site, source, db = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), sys.argv[3]
    # Nothing editable: drop the source tree (an editable install's path entry).
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != source]

    import dispatcher
    import dispatcher.store.database

    package = Path(dispatcher.__file__).resolve()
    migrations = dispatcher.store.database.migrations_dir().resolve()
    assert package.is_relative_to(site), package
    assert migrations.is_relative_to(site), migrations

    dispatcher.store.database.migrate(f"sqlite:///{db}")

    loaded = sorted(
        name for name, mod in sys.modules.items()
        if name.split(".")[0] in ("dispatcher", "triggers")
        and getattr(mod, "__file__", None)
        and not Path(mod.__file__).resolve().is_relative_to(site)
    )
    assert not loaded, loaded

    import sqlite3
    conn = sqlite3.connect(db)
    version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    conn.close()
    print(json.dumps({"package": str(package), "migrations": str(migrations),
                      "version": version}))
    """
)


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"pip {' '.join(args)}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--no-cache-dir",
        "-w",
        str(out),
        str(REPO_ROOT),
        cwd=out,
    )
    wheels = list(out.glob("worktree_dispatcher-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "dispatcher/_migrations/env.py" in names
    for version in version_files():
        assert f"dispatcher/_migrations/versions/{version}" in names
    assert "dispatcher/__init__.py" in names
    assert "dispatcher/store/database.py" in names
    assert "triggers/__init__.py" in names
    # Only inside the package: no top-level `migrations` or test code.
    assert not any(n.startswith(("migrations/", "tests/")) for n in names)


def test_wheel_ships_the_api_docs_assets(wheel: Path) -> None:
    """/docs and /redoc load their assets from the package (no CDN): every vendored file,
    byte for byte, with the licenses and READMEs."""
    from dispatcher.api.docs_ui import STATIC_DIR

    shipped = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
    assert {p.name for p in shipped} >= {
        "swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "redoc.standalone.js",
        "LICENSE", "README.md",
    }  # fmt: skip
    with zipfile.ZipFile(wheel) as zf:
        for path in shipped:
            name = path.relative_to(REPO_ROOT).as_posix()
            assert zf.read(name) == path.read_bytes(), name


def test_wheel_ships_the_dashboards_templates_and_scripts(wheel: Path) -> None:
    """/ui renders its templates and loads its scripts from the package (no CDN): every
    template and static file, vendored htmx with its license and README, byte for byte."""
    web = REPO_ROOT / "dispatcher" / "web"
    shipped = sorted(
        p for d in ("templates", "static") for p in (web / d).rglob("*") if p.is_file()
    )
    assert {p.name for p in shipped} >= {
        "base.html", "job.html", "ui.js", "ui.css", "htmx.min.js", "sse.min.js", "LICENSE",
        "README.md",
    }  # fmt: skip
    with zipfile.ZipFile(wheel) as zf:
        for path in shipped:
            name = path.relative_to(REPO_ROOT).as_posix()
            assert zf.read(name) == path.read_bytes(), name


def test_wheel_declares_the_cli_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (entry_points,) = (n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = zf.read(entry_points).decode()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser["console_scripts"]["dispatcher"] == "dispatcher.cli.commands:main"


def test_installed_wheel_migrates_an_empty_database(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    _pip(
        "install",
        "--no-deps",
        "--no-index",
        "--no-cache-dir",
        "--target",
        str(site),
        str(wheel),
        cwd=tmp_path,
    )
    for version in version_files():
        assert (site / "dispatcher" / "_migrations" / "versions" / version).is_file()

    db = tmp_path / "empty.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-c", _CHECK, str(site), str(REPO_ROOT), str(db)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"] == head_revision()
    assert Path(report["package"]).is_relative_to(site.resolve())
    assert Path(report["migrations"]) == (site / "dispatcher" / "_migrations").resolve()

    with closing(sqlite3.connect(db)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"repo", "job", "alembic_version"} <= tables
    assert journal == "wal"
