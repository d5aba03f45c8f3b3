"""Run folders on a device, judged from the host, and what edgekit remembers about each device.

Each run folder on a device carries an owner record (.edgekit-run.json: this host, process and a token
per connection) and, once the runner starts, its guard's record (.edgekit-guard.json: pid, process
group, deadline). On every connection edgekit lists the run folders and decides here which runs
outlived their client (kill them) and which folders can go (remove them); nothing else is touched:
another machine's run is only ever stopped after its own deadline has passed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.fsutil import atomic_write_text

DAY_S = 24 * 3600
#: how long past its own deadline a run counts as still going (its guard ends it at the deadline; its
#: client may still be fetching the results)
OVERDUE_GRACE_S = 300

_live_tokens: set[str] = set()
_live_lock = threading.Lock()
_state_lock = threading.Lock()


def new_owner(keep: bool) -> dict[str, Any]:
    """The owner record of a new run folder; its token counts as live until ``release``."""
    token = uuid.uuid4().hex
    with _live_lock:
        _live_tokens.add(token)
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _process_start(os.getpid()),
            "token": token, "keep": keep}


def release(owner: dict[str, Any]) -> None:
    """This connection is done with its run folder (removed, or left behind by a dropped connection)."""
    with _live_lock:
        _live_tokens.discard(owner.get("token"))


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the edgekit connection that made a run folder may still be using it. Runs of other
    hosts always count as alive: from here their client cannot be seen."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return True
    pid = owner["pid"]
    if pid == os.getpid():
        with _live_lock:
            return owner.get("token") in _live_tokens
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _process_start(pid)
    return started is None or owner.get("pid_started") in (None, started)


def stale_runs(listing: dict[str, Any]) -> list[dict[str, Any]]:
    """From the device's listing of run folders: the runs to kill and the folders to remove.

    A run is forgotten when its client is gone (this host, and that process or connection ended) or
    it is past its own deadline. Kill: a forgotten run whose guard is still alive. Remove: a folder
    nothing runs in any more that is forgotten (unless kept with --keep-remote) or older than a day.
    """
    actions = []
    for run in listing.get("runs", []):
        owner, guard = run.get("owner") or {}, run.get("guard") or {}
        deadline = guard.get("deadline")
        overdue = isinstance(deadline, (int, float)) and listing["now"] > deadline + OVERDUE_GRACE_S
        forgotten = overdue or (bool(owner) and not owner_alive(owner))
        kill = bool(run.get("guard_alive")) and forgotten
        idle = kill or not run.get("guard_alive")
        remove = idle and ((forgotten and not owner.get("keep")) or run.get("age_s", 0) > DAY_S)
        if kill or remove:
            actions.append({"path": run["path"], "guard_pid": guard.get("guard_pid"), "runner_pgid": guard.get("runner_pgid"),
                            "kill": kill, "remove": remove})
    return actions


# --- what edgekit remembers per device --------------------------------------------------------


def _state_file() -> Path:
    from edgekit.cache import state_dir

    return state_dir() / "devices.json"


@contextlib.contextmanager
def _locked_state() -> Iterator[Path]:
    """The state file, held against other threads and other edgekit processes (fleet runs write at once)."""
    path = _state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _state_lock, open(path.with_suffix(".lock"), "a") as lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): the thread lock still serializes this process
            pass
        yield path


def note_boot(device_key: str, boot_id: str | None) -> bool | None:
    """Remember the device's boot id; True if it differs from the one seen on the last run (the device
    rebooted in between), False if not, None when unknown (first run, or no boot id on this device)."""
    if not boot_id:
        return None
    with _locked_state() as path:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
        previous = (state.get(device_key) or {}).get("boot_id")
        state[device_key] = {"boot_id": boot_id, "seen_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
    return None if previous is None else previous != boot_id
