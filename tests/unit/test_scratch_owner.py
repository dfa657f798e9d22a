"""Job scratch folders on a data volume that workers of several containers share (docker-compose.yml mounts one
volume on every worker): a pid is judged only in its own pid namespace, elsewhere the owner's heartbeat counts.
Found by the deployment test: a second worker container deleted the first one's running job folders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.sandbox import process_identity
from workers.runner import FOREIGN_GRACE_S, OWNER_FILE, collect_orphaned_scratch, pid_namespace


def _folder(tmp: Path, name: str, owner: object) -> Path:
    folder = tmp / f"job_{name}-x"
    folder.mkdir()
    (folder / OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_a_folder_of_another_containers_worker_is_kept_while_its_heartbeat_lasts(tmp_path: Path) -> None:
    dead = [2**22 + 7, 1]  # no such process here; in its own container it may well be alive
    foreign = _folder(tmp_path, "foreign", {"namespace": "other-host|boot|pid:[1]", "process": dead})
    stale = _folder(tmp_path, "stale", {"namespace": "other-host|boot|pid:[1]", "process": dead})
    old = time.time() - FOREIGN_GRACE_S - 60
    os.utime(stale / OWNER_FILE, (old, old))
    here_dead = _folder(tmp_path, "heredead", {"namespace": pid_namespace(), "process": dead})
    here_alive = _folder(tmp_path, "herealive", {"namespace": pid_namespace(), "process": process_identity()})
    legacy_dead = _folder(tmp_path, "legacy", dead)

    removed = collect_orphaned_scratch(tmp_path)

    assert sorted(removed) == sorted(f.name for f in (stale, here_dead, legacy_dead))
    assert foreign.exists() and here_alive.exists()


def test_the_namespace_names_the_machine_and_the_pid_namespace() -> None:
    host, boot, namespace = pid_namespace().split("|")
    assert host and len(boot) == 36 and namespace.startswith("pid:[")
