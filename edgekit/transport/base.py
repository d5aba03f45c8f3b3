"""The Transport interface: the verifier uploads files, runs a command and downloads results
through it without knowing whether it talks to this host or to a device over SSH."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgekit.errors import DeviceError

if TYPE_CHECKING:
    from edgekit.profiles import TargetProfile

# Runs on the host or the device as `python -c GUARD LOCK LOCK_TIMEOUT TIMEOUT OVER_SSH argv...`
# (Python 3.8+), in the run folder: takes the machine's lock (flock: the OS drops it when this process
# ends, so it never goes stale), so two runs never measure each other; then runs argv in its own process
# group and kills the whole group after TIMEOUT seconds, when argv ends (children left behind would hold
# the SSH channel open), or on SIGTERM/SIGHUP. With OVER_SSH=1 it also ends the run when its stdin (the
# SSH channel) reaches EOF: the client is gone and nobody waits for the result; and it records its pid,
# the group and its deadline in .edgekit-guard.json in the run folder, so edgekit's next connection can
# reap a run that outlived its client.
GUARD = r"""
import json, os, signal, subprocess, sys, threading, time
lock_path, lock_timeout, timeout, over_ssh, argv = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == '1', sys.argv[5:]
child = None
def record(deadline):
    if not over_ssh:
        return
    try:
        with open('.edgekit-guard.json.tmp', 'w') as handle:
            json.dump({'guard_pid': os.getpid(), 'runner_pgid': child.pid if child else None, 'deadline': deadline}, handle)
        os.replace('.edgekit-guard.json.tmp', '.edgekit-guard.json')
    except OSError:
        pass
def kill_group():
    try:
        if child is not None:
            os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
def end(signum, frame):
    kill_group()
    os._exit(128 + signum)
signal.signal(signal.SIGTERM, end)
signal.signal(signal.SIGHUP, end)
record(time.time() + lock_timeout + timeout)
held = None
try:
    import fcntl
except ImportError:
    fcntl = None
if lock_path and fcntl is not None:
    folder = os.path.dirname(lock_path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder)
    held = open(lock_path, 'a')
    deadline = time.time() + lock_timeout
    while True:
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.time() >= deadline:
                sys.stderr.write('EDGEKIT_LOCK_TIMEOUT another edgekit run held the lock %s for more than %.0f s\n' % (lock_path, lock_timeout))
                sys.exit(125)
            time.sleep(0.2)
child = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL if over_ssh else None)
record(time.time() + timeout)
if over_ssh:
    def watch():
        while os.read(0, 65536):
            pass
        end(signal.SIGHUP, None)
    threading.Thread(target=watch, daemon=True).start()
try:
    code = child.wait(timeout=timeout)
except subprocess.TimeoutExpired:
    kill_group()
    child.wait()
    sys.stderr.write('EDGEKIT_TIMEOUT\n')
    sys.exit(124)
except BaseException:
    kill_group()
    raise
kill_group()
sys.exit(code if code >= 0 else 128 - code)
"""
GUARD_TIMEOUT_EXIT, GUARD_LOCK_EXIT = 124, 125


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    signal: str | None = None  # "ALRM" when the run hit its timeout and was killed


def guarded(python: str, lock_path: str | None, lock_timeout: float, timeout: float, script: str, args: list[str],
            over_ssh: bool = False, runner: list[str] | None = None) -> list[str]:
    """The argv that runs ``python script args`` under GUARD (which itself runs on ``python``); ``runner``
    replaces the interpreter that runs the script (an emulated one); ``over_ssh``: it runs in a device's
    run folder with the SSH channel as stdin."""
    return [python, "-c", GUARD, lock_path or "", str(lock_timeout), str(timeout), "1" if over_ssh else "0",
            *(runner or [python]), script, *args]


def interpret_guard(result: CommandResult, place: str) -> CommandResult:
    """Turn GUARD's lock-timeout exit into a DeviceError and its timeout exit into signal 'ALRM'."""
    if result.exit_code == GUARD_LOCK_EXIT and "EDGEKIT_LOCK_TIMEOUT" in result.stderr:
        message = result.stderr.split("EDGEKIT_LOCK_TIMEOUT", 1)[1].strip().splitlines()[0]
        raise DeviceError(f"{place}: {message}", hint="another verification is using this machine; retry later or raise lock_timeout")
    if result.exit_code == GUARD_TIMEOUT_EXIT and "EDGEKIT_TIMEOUT" in result.stderr:
        result.signal = "ALRM"
    return result


class Transport(ABC):
    #: "host" for this machine, "device" for anything reached over the network, "emulated" for qemu-user here
    where: Literal["host", "device", "emulated"] = "host"
    #: the device's name as shown in reports (None on the host)
    device_name: str | None = None
    #: the Python interpreter that runs the device runner
    python: str = "python3"
    #: the lock file that serializes runs on this machine, how long to wait for it, and the run timeout
    lock_path: str | None = None
    lock_timeout: float = 900.0
    run_timeout: float = 600.0
    #: what the transport learnt about the machine (boot id, file transfer used, runs reaped), for the report
    facts: dict

    def __init__(self) -> None:
        self.facts = {}

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def place(self) -> str:
        """Where runs happen, for messages ("on this host", "on device 'pi5'")."""
        return "on this host" if self.where == "host" else f"on device '{self.device_name}'"

    def use_profile(self, profile: TargetProfile) -> None:
        """Take what the target profile says about this machine (the emulated CPU model); most transports ignore it."""

    def latency_plan(self, warmup: int, runs: int) -> tuple[int, int]:
        """The warm-up and timed runs to do here (emulators do fewer: their timings are not the device's)."""
        return warmup, runs

    def report_fields(self) -> dict[str, Any]:
        """Extra VerificationResult fields describing this place (the emulated CPU)."""
        return {}

    def open(self) -> None:
        """Connect and create a fresh per-run work directory."""

    def close(self) -> None:
        """Remove the work directory (unless kept) and disconnect."""

    @abstractmethod
    def upload(self, local: Path, name: str) -> None:
        """Copy ``local`` into the work directory as ``name`` (checked by sha256 where remote)."""

    @abstractmethod
    def download(self, name: str, local: Path) -> None:
        """Copy ``name`` from the work directory to ``local``."""

    @abstractmethod
    def run_python(self, script: str, args: list[str], timeout: float) -> CommandResult:
        """Run ``python script args...`` in the work directory under the machine's lock; kill it and
        everything it started after ``timeout`` s (the result's signal is then "ALRM")."""
