"""tests/pg.py: a cluster left by a test process that is gone is stopped and removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.pg import OWNER_FILE, PREFIX, reap_stale, start_cluster


def test_a_dead_test_process_cluster_is_reaped_and_a_live_ones_kept() -> None:
    # Not tmp_path: as root the cluster's owner (postgres) must reach it.
    tmp_path = Path(tempfile.mkdtemp(prefix="pg-reap-"))
    tmp_path.chmod(0o755)
    cluster = start_cluster(tmp_path)
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().splitlines()[0])
        gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True)
        (cluster.root / OWNER_FILE).write_text(f"{int(gone.stdout)} 1\n")  # its pytest died
        live = tmp_path / f"{PREFIX}live"
        live.mkdir()
        me = Path(f"/proc/{os.getpid()}/stat").read_text()
        (live / OWNER_FILE).write_text(f"{os.getpid()} {me[me.rindex(')') + 2 :].split()[19]}\n")
        assert reap_stale(tmp_path) == [cluster.root]
        assert not cluster.root.exists() and live.exists()
        assert not Path(f"/proc/{postmaster}").exists() or _zombie(postmaster)
    finally:
        if cluster.root.exists():
            cluster.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def _zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[0] == "Z"
