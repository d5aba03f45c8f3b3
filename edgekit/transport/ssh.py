"""SSH transport (asyncssh): runs the device runner on a real device.

Safety rules it keeps:
- host keys are verified against known_hosts; an unknown or changed key is an error that shows the
  fingerprint and how to trust it, never a silent auto-add;
- every string that reaches the remote shell goes through ``shlex.quote``;
- every stage of the connection and every remote command has a deadline (devices.toml), and each
  remote command is killed *on the device* when it passes it (closing an SSH channel kills nothing);
- uploads land under a hidden temporary name, are checked by size and sha256 on the device (a bad
  copy is sent once more), then renamed; downloads are checked the same way;
- each run gets a fresh remote folder that is removed afterwards, also on failure; runs whose client
  went away are killed, and their folders removed, on the next connection (edgekit/transport/runs.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from edgekit._lazy import require
from edgekit.devices import Device
from edgekit.errors import DeviceConnectionLost, DeviceError, DeviceStalled, DeviceTransferFailed
from edgekit.fsutil import sha256_tree, size_of
from edgekit.transport import remote, runs
from edgekit.transport.base import CommandResult, Transport, guarded, interpret_guard
from edgekit.transport.remote import deadline_command
from edgekit.transport.ssh_connect import Stages, connect, session_error
from edgekit.transport.ssh_files import EXEC_STREAM, SFTP, decoded, get_sftp, get_stream, put_sftp, put_stream, sftp_problem

MIN_PYTHON = (3, 8)
# How much longer than a remote command's deadline the client waits before it gives up on the device.
CLIENT_MARGIN_S = remote.DEADLINE_KILL_AFTER + 10


class SSHTransport(Transport):
    where = "device"

    def __init__(self, device: Device, keep_remote: bool = False) -> None:
        super().__init__()
        self.device = device
        self.device_name = device.name
        self.python = device.python
        self.keep_remote = keep_remote
        self.lock_path = f"{device.work_dir.rstrip('/')}/.edgekit.lock"
        self.lock_timeout = device.lock_timeout
        self.run_timeout = device.run_timeout
        self.remote_dir: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._tunnel: Any = None
        self._stages: Stages | None = None
        self._owner: dict[str, Any] | None = None
        self._file_transfer: str | None = None  # SFTP or EXEC_STREAM, decided on the first transfer

    # --- connection -------------------------------------------------------------------------

    def open(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._conn, self._tunnel, self._stages = self._call(connect(self.device))
            self._check_python()
            self._prepare_run_folder()
        except BaseException:
            self._release()
            self._disconnect()
            raise

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            if self.remote_dir and not self.keep_remote and self._conn is not None:
                try:
                    self._command(["rm", "-rf", self.remote_dir], self.device.command_timeout, "removing the run folder")
                except DeviceError:
                    pass  # the device went away; the next connection removes the folder (its owner is gone)
        finally:
            self._release()
            self._disconnect()
            self.remote_dir = None

    def _release(self) -> None:
        if self._owner is not None:
            runs.release(self._owner)

    def _disconnect(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for conn in (self._conn, self._tunnel):
            if conn is not None:
                conn.close()
                try:
                    loop.run_until_complete(asyncio.wait_for(conn.wait_closed(), 5))
                except Exception:
                    pass
        self._conn = self._tunnel = None
        loop.close()

    def _reconnect(self) -> None:
        for conn in (self._conn, self._tunnel):
            if conn is not None:
                conn.abort()
        self._conn = self._tunnel = None
        self._conn, self._tunnel, self._stages = self._call(connect(self.device))

    def _call(self, coroutine: Any, timeout: float | None = None) -> Any:
        assert self._loop is not None, "SSHTransport used outside 'with'"
        if timeout is not None:
            coroutine = asyncio.wait_for(coroutine, timeout)
        return self._loop.run_until_complete(coroutine)

    def _session(self, coroutine: Any, timeout: float, doing: str) -> Any:
        """Run one exchange with the device; a lost or silent connection becomes its DeviceError."""
        asyncssh = require("asyncssh", "core")
        try:
            return self._call(coroutine, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise DeviceStalled(f"device '{self.device.name}': {doing} got no answer within {timeout:g} s",
                                hint="the device or the network stopped answering; check the device") from None
        except asyncssh.SFTPError as exc:
            if not isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
                raise DeviceError(f"device '{self.device.name}': {doing} failed: {exc.reason}") from None
            raise session_error(self.device, doing, exc, self._stages) from None
        except (asyncssh.Error, OSError, EOFError) as exc:
            raise session_error(self.device, doing, exc, self._stages) from None

    # --- commands ---------------------------------------------------------------------------

    def _command(self, argv: list[str], seconds: float, doing: str, cwd: str | None = None) -> CommandResult:
        """Run ``argv`` on the device (in ``cwd``); it is killed there after ``seconds`` (DeviceStalled)."""
        started = time.monotonic()
        result = self._session(self._conn.run(deadline_command(argv, seconds, cwd), check=False), seconds + CLIENT_MARGIN_S, doing)
        if result.exit_status is None and self._stages is not None and self._stages.lost is not None:
            raise session_error(self.device, doing, None, self._stages)
        code = result.exit_status if result.exit_status is not None else -1
        if code in remote.DEADLINE_EXITS and time.monotonic() - started >= seconds:
            raise DeviceStalled(f"device '{self.device.name}': {doing} did not finish within {seconds:g} s; it was stopped on the device",
                                hint="check the device (a hung interpreter, a full or failing disk); devices.toml sets this deadline")
        return CommandResult(code, decoded(result.stdout), decoded(result.stderr), signal=(result.exit_signal[0] if result.exit_signal else None))

    def _check_python(self) -> None:
        seconds = min(self.device.command_timeout, self.device.run_timeout)
        result = self._command([self.python, "-c", remote.PROBE_PYTHON], seconds, f"the probe of python '{self.python}'")
        problem = python_problem(self.device.name, self.python, result)
        if problem is not None:
            raise problem

    def _prepare_run_folder(self) -> None:
        """Make this run's folder, reap runs whose client is gone, and note the device's boot id."""
        self._owner = runs.new_owner(keep=self.keep_remote)
        result = self._command([self.python, "-c", remote.HOUSEKEEPING, self.device.work_dir, json.dumps(self._owner)],
                               self.device.command_timeout, "preparing the run folder")
        try:
            listing = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            listing = None
        if result.exit_code != 0 or not isinstance(listing, dict):
            raise DeviceError(f"device '{self.device.name}': cannot create a work folder under {self.device.work_dir}: {result.stderr.strip() or result.stdout.strip()}",
                              hint="check that work_dir exists or can be created, is writable by the SSH user, and the disk is not full")
        self.remote_dir = listing["run_dir"]
        self.facts.update(self._reap(runs.stale_runs(listing)))
        device_key = f"{self.device.name} {self.device.user or ''}@{self.device.host}:{self.device.port or 22}"
        self.facts.update(boot_id=listing.get("boot_id"), rebooted_since_last_run=runs.note_boot(device_key, listing.get("boot_id")))

    def _reap(self, actions: list[dict[str, Any]]) -> dict[str, int]:
        if not actions:
            return {"stale_runs_killed": 0, "run_folders_removed": 0}
        result = self._command([self.python, "-c", remote.REAP, json.dumps(actions)], self.device.command_timeout, "removing stale runs")
        try:
            counts = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            counts = {}
        return {"stale_runs_killed": int(counts.get("killed", 0)), "run_folders_removed": int(counts.get("removed", 0))}

    def run_python(self, script: str, args: list[str], timeout: float) -> CommandResult:
        """Run the script in the run folder under the device lock; it and its children are killed on the
        device after ``timeout`` seconds, or as soon as this connection goes away."""
        if self.remote_dir is None:
            raise RuntimeError("SSHTransport used outside 'with'")
        seconds = max(1, int(timeout))
        argv = guarded(self.python, self.lock_path, self.lock_timeout, seconds, script, args, over_ssh=True)
        result = self._command(argv, seconds + self.lock_timeout + 30, f"running {script}", cwd=self.remote_dir)
        return interpret_guard(result, f"device '{self.device.name}'")

    # --- files ------------------------------------------------------------------------------

    def upload(self, local: Path, name: str) -> None:
        """Upload under a hidden name, check size and sha256 on the device, then rename. A dropped
        connection (reconnecting first) or a corrupted copy is sent once more."""
        try:
            self._upload_once(local, name)
        except _Corrupted as first:
            try:
                self._upload_once(local, name)
                self.facts.setdefault("uploads_resent_after_a_bad_checksum", []).append(name)
            except _Corrupted as second:
                raise DeviceTransferFailed(f"device '{self.device.name}': {second}, also when sent again (first time: {first})",
                                           hint="the device's storage or memory may be failing: check it (dmesg, fsck)") from None
        except DeviceConnectionLost as first:
            try:
                self._reconnect()
                self._upload_once(local, name)
            except (DeviceError, _Corrupted) as second:
                raise DeviceConnectionLost(f"device '{self.device.name}': the connection dropped while uploading {name} ({first.message}); "
                                           f"the retry failed too ({getattr(second, 'message', second)})",
                                           hint="check the device and network, then run again") from None

    def _upload_once(self, local: Path, name: str) -> None:
        assert self.remote_dir is not None
        final, partial = f"{self.remote_dir}/{name}", f"{self.remote_dir}/.{name}.partial"
        self._ensure_space(local, name)
        self._send(local, partial, name)
        expected = (size_of(local), sha256_tree(local))
        got = self._remote_hash(partial, name)
        if got != expected:
            self._command(["rm", "-rf", partial], self.device.command_timeout, f"removing the bad copy of {name}")
            raise _Corrupted(f"{name} arrived corrupted ({_describe(got)} on the device, {_describe(expected)} sent)")
        moved = self._command(["mv", "-f", partial, final], self.device.command_timeout, f"moving {name} into place")
        if moved.exit_code != 0:
            raise DeviceError(f"device '{self.device.name}': cannot move {name} into place: {moved.stderr.strip()}")

    def _send(self, local: Path, remote: str, name: str) -> None:
        asyncssh = require("asyncssh", "core")
        seconds, doing = self.device.upload_timeout, f"uploading {name}"
        try:
            if self._transfer_method() == SFTP:
                self._call(put_sftp(self._conn, local, remote), timeout=seconds)
                return
            code, stderr = self._call(put_stream(self._conn, local, remote, lambda argv: deadline_command(argv, seconds), self.python),
                                      timeout=seconds + CLIENT_MARGIN_S)
        except (asyncio.TimeoutError, TimeoutError):
            raise DeviceStalled(f"device '{self.device.name}': uploading {name} took longer than {seconds:g} s (upload_timeout)",
                                hint="raise upload_timeout in devices.toml, or check the link speed") from None
        except asyncssh.SFTPError as exc:
            if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
                raise session_error(self.device, doing, exc, self._stages) from None
            raise DeviceError(f"device '{self.device.name}': writing {name} failed: {exc.reason}",
                              hint=f"the device's disk may be full or {self.device.work_dir} not writable") from None
        except (asyncssh.Error, OSError, EOFError) as exc:
            raise session_error(self.device, doing, exc, self._stages) from None
        if code is None:
            raise session_error(self.device, doing, None, self._stages)
        if code != 0:
            raise DeviceError(f"device '{self.device.name}': writing {name} failed: {stderr.strip()[-300:] or f'exit status {code}'}",
                              hint=f"the device's disk may be full or {self.device.work_dir} not writable")

    def _transfer_method(self) -> str:
        """SFTP where the device offers it, else streaming over an exec channel (noted in the report)."""
        if self._file_transfer is None:
            problem = self._session(sftp_problem(self._conn), self.device.command_timeout, "opening SFTP")
            self._file_transfer = SFTP if problem is None else EXEC_STREAM
            self.facts["file_transfer"] = self._file_transfer
            if problem:
                self.facts["file_transfer_reason"] = f"no SFTP on the device: {problem}"
        return self._file_transfer

    def _remote_hash(self, path: str, name: str) -> tuple[int, str] | None:
        check = self._command([self.python, "-c", remote.REMOTE_HASH, path], self.device.upload_timeout, f"checking {name}")
        parts = check.stdout.split()
        if check.exit_code != 0 or len(parts) != 2 or not parts[0].isdigit():
            return None
        return int(parts[0]), parts[1]

    def _ensure_space(self, local: Path, name: str) -> None:
        needed = size_of(local)
        check = self._command([self.python, "-c", remote.FREE_SPACE, self.remote_dir or "."], self.device.command_timeout, "checking free disk")
        try:
            free = int(check.stdout.strip())
        except ValueError:
            return  # cannot tell; the upload itself will report a write failure
        if free < needed + (1 << 20):
            raise DeviceError(f"device '{self.device.name}': not enough free disk in {self.device.work_dir} for {name} "
                              f"({free / 1024**2:.1f} MiB free; it needs {needed / 1024:.0f} KiB plus 1 MiB to spare)",
                              hint="free space on the device or point work_dir at a larger disk")

    def download(self, name: str, local: Path) -> None:
        """Bring ``name`` back; its size and sha256 must match the device's copy (fetched once more if not)."""
        remote = f"{self.remote_dir}/{name}"
        expected = self._remote_hash(remote, name)
        if expected is None:
            raise DeviceError(f"device '{self.device.name}': the runner did not produce {name}")
        got = None
        for _ in range(2):
            self._fetch(remote, local, name)
            got = (size_of(local), sha256_tree(local))
            if got == expected:
                return
        raise DeviceTransferFailed(f"device '{self.device.name}': {name} came back corrupted twice ({_describe(got)} received, {_describe(expected)} on the device)",
                                   hint="check the network path and the device's storage")

    def _fetch(self, remote: str, local: Path, name: str) -> None:
        doing, seconds = f"downloading {name}", self.device.upload_timeout
        if self._transfer_method() == SFTP:
            self._session(get_sftp(self._conn, remote, local), seconds, doing)
            return
        code, stderr = self._session(get_stream(self._conn, remote, local, lambda argv: deadline_command(argv, seconds)), seconds + CLIENT_MARGIN_S, doing)
        if code != 0:
            raise DeviceError(f"device '{self.device.name}': {doing} failed: {stderr.strip()[-300:] or f'exit status {code}'}")


def _describe(size_and_hash: tuple[int, str] | None) -> str:
    if size_and_hash is None:
        return "unreadable"
    return f"{size_and_hash[0]} bytes, sha256 {size_and_hash[1][:16]}…"


def python_problem(device: str, python: str, result: CommandResult) -> DeviceError | None:
    """What is wrong with the device's python, judged from the PROBE_PYTHON run (None: fine)."""
    lines = result.stdout.strip().splitlines()
    if result.exit_code == 127 or (result.exit_code != 0 and not lines and "not found" in result.stderr):
        return DeviceError(f"device '{device}': python '{python}' was not found",
                           hint="set python in devices.toml to the interpreter's full path (login shells may rewrite PATH)")
    if lines:
        try:
            version = tuple(int(p) for p in lines[0].split(".")[:2])
        except ValueError:
            version = (0, 0)
        if version < MIN_PYTHON:
            return DeviceError(f"device '{device}': python '{python}' is {lines[0]}; the device runner needs Python 3.8 or newer",
                               hint="install python3.8+ on the device and point python in devices.toml at it")
    if result.exit_code != 0:
        if "numpy" in result.stderr:
            return DeviceError(f"device '{device}': numpy is not installed for {python}",
                               hint="on the device: python3 -m pip install numpy (Termux: pkg install python-numpy)")
        return DeviceError(f"device '{device}': python '{python}' failed: {result.stderr.strip()[-500:]}")
    return None


class _Corrupted(Exception):
    pass


def trust_host(device: Device, assume_yes: bool, confirm: Any) -> tuple[str, Path]:
    """Fetch the device's host key, show its fingerprint, and append it to known_hosts once confirmed."""
    asyncssh = require("asyncssh", "core")
    port = device.port or 22
    loop = asyncio.new_event_loop()
    try:
        key = loop.run_until_complete(asyncio.wait_for(asyncssh.get_server_host_key(device.host, port), device.connect_timeout + device.handshake_timeout))
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        raise DeviceError(f"device '{device.name}': cannot fetch its host key: {exc}") from None
    finally:
        loop.close()
    if key is None:
        raise DeviceError(f"device '{device.name}': the server offered no host key")
    fingerprint = key.get_fingerprint("sha256")
    path = device.known_hosts or Path.home() / ".ssh" / "known_hosts"
    if not assume_yes and not confirm(f"device '{device.name}' ({device.host}:{port}) presents host key {fingerprint}. Trust it and add it to {path}?"):
        raise DeviceError("not trusted: nothing was written")
    host = device.host if port == 22 else f"[{device.host}]:{port}"
    line = f"{host} {key.export_public_key('openssh').decode().strip()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
    return fingerprint, path
