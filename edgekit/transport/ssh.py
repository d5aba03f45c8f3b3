"""SSH transport (asyncssh): runs the device runner on a real device.

Safety rules it keeps:
- host keys are verified against known_hosts; an unknown or changed key is an error that shows the
  fingerprint and how to trust it, never a silent auto-add;
- every string that reaches the remote shell goes through ``shlex.quote``;
- uploads land under a hidden temporary name, are checked by sha256 on the device, then renamed;
- each run gets a fresh remote folder (``mktemp -d``) that is removed afterwards, also on failure;
- a run that hangs is killed *on the device* (an alarm in the remote process, since closing the
  SSH channel does not kill it).
"""

from __future__ import annotations

import asyncio
import shlex
import socket
from pathlib import Path
from typing import Any

from edgekit._lazy import require
from edgekit.devices import Device
from edgekit.errors import DeviceError
from edgekit.fsutil import sha256_tree, size_of
from edgekit.transport.base import CommandResult, Transport, guarded, interpret_guard

MIN_PYTHON = (3, 8)
# The same tree hash as edgekit.fsutil.sha256_tree, for files and folders (.mlpackage).
REMOTE_HASH = r"""
import hashlib, os, sys
def file_hash(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
root = sys.argv[1]
if os.path.isfile(root):
    print(file_hash(root))
else:
    digest = hashlib.sha256()
    items = []
    for folder, _, files in os.walk(root):
        for name in files:
            full = os.path.join(folder, name)
            items.append((os.path.relpath(full, root).replace(os.sep, '/'), full))
    for rel, full in sorted(items):
        digest.update(rel.encode() + b'\0')
        digest.update(file_hash(full).encode())
    print(digest.hexdigest())
"""
PROBE_PYTHON = "import sys; print('%d.%d.%d' % sys.version_info[:3]); import numpy; print(numpy.__version__)"


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


class SSHTransport(Transport):
    where = "device"

    def __init__(self, device: Device, keep_remote: bool = False) -> None:
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

    # --- connection -------------------------------------------------------------------------

    def open(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._call(self._connect())
            self._check_python()
            result = self._shell(f"mkdir -p {shlex.quote(self.device.work_dir)} && mktemp -d {shlex.quote(self.device.work_dir.rstrip('/') + '/run.XXXXXXXX')}",
                                 timeout=self.device.connect_timeout + 30)
            if result.exit_code != 0:
                raise DeviceError(f"device '{self.device.name}': cannot create a work folder under {self.device.work_dir}: {result.stderr.strip() or result.stdout.strip()}",
                                  hint="check that work_dir exists or can be created, is writable by the SSH user, and the disk is not full")
            self.remote_dir = result.stdout.strip().splitlines()[-1]
        except BaseException:
            self._disconnect()
            raise

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            if self.remote_dir and not self.keep_remote and self._conn is not None:
                try:
                    self._shell(f"rm -rf {shlex.quote(self.remote_dir)}", timeout=60)
                except DeviceError:
                    pass  # the device went away; the hidden run folder is swept on a later run
        finally:
            self._disconnect()
            self.remote_dir = None

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

    def _call(self, coroutine: Any, timeout: float | None = None) -> Any:
        assert self._loop is not None, "SSHTransport used outside 'with'"
        if timeout is not None:
            coroutine = asyncio.wait_for(coroutine, timeout)
        return self._loop.run_until_complete(coroutine)

    def _known_hosts_path(self) -> Path:
        return self.device.known_hosts or Path.home() / ".ssh" / "known_hosts"

    def _options(self) -> dict[str, Any]:
        asyncssh = require("asyncssh", "core", purpose="SSH devices")
        path = self._known_hosts_path()
        # A missing known_hosts file means "no key is trusted", never "trust anything".
        known = asyncssh.import_known_hosts(path.read_text()) if path.is_file() else asyncssh.import_known_hosts("")
        options: dict[str, Any] = {"known_hosts": known, "connect_timeout": self.device.connect_timeout,
                                   "keepalive_interval": 15, "keepalive_count_max": 3}
        if self.device.port:
            options["port"] = self.device.port
        if self.device.user:
            options["username"] = self.device.user
        if self.device.key_file:
            options["client_keys"] = [str(self.device.key_file)]
        return options

    async def _connect(self) -> None:
        asyncssh = require("asyncssh", "core", purpose="SSH devices")
        options = self._options()
        where = f"{self.device.host}:{self.device.port or 22}"
        try:
            if self.device.jump_host:
                from edgekit.devices import parse_ad_hoc

                jump = parse_ad_hoc(self.device.jump_host)
                jump_options = {k: v for k, v in options.items() if k not in ("port", "username")}
                self._tunnel = await asyncssh.connect(jump.host, port=jump.port or 22, username=jump.user, **jump_options)
                options["tunnel"] = self._tunnel
            self._conn = await asyncssh.connect(self.device.host, **options)
        except asyncssh.HostKeyNotVerifiable:
            raise await self._host_key_error() from None
        except asyncssh.PermissionDenied:
            raise DeviceError(f"device '{self.device.name}' ({where}): authentication failed for user '{self.device.user or 'default'}'",
                              hint="check user and key_file in devices.toml, that the public key is in the device's ~/.ssh/authorized_keys, or that your SSH agent holds the key") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise DeviceError(f"device '{self.device.name}' ({where}): no answer within {self.device.connect_timeout:.0f} s",
                              hint="check that the device is on and reachable, or raise connect_timeout") from None
        except (ConnectionRefusedError, socket.gaierror, OSError, asyncssh.Error) as exc:
            raise DeviceError(f"device '{self.device.name}' ({where}) is unreachable: {exc}",
                              hint="check the host name/address and port, that sshd runs on the device, and the network") from None

    async def _host_key_error(self) -> DeviceError:
        asyncssh = require("asyncssh", "core")
        port = self.device.port or 22
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(self.device.host, port), self.device.connect_timeout)
            fingerprint = key.get_fingerprint("sha256") if key else "unknown"
        except Exception:  # the fingerprint is a courtesy; the error stands without it
            fingerprint = "unknown (could not fetch it)"
        path = self._known_hosts_path()
        known = asyncssh.import_known_hosts(path.read_text()) if path.is_file() else None
        trusted = []
        if known is not None:
            try:
                trusted = known.match(self.device.host, "", port)[0]
            except Exception:
                trusted = []
        if trusted:
            return DeviceError(
                f"device '{self.device.name}': the host key CHANGED (now {fingerprint}); it does not match {path}. "
                "This can mean someone is intercepting the connection, or the device was reinstalled",
                hint=f"if you know the device was reinstalled, remove its old line from {path} (ssh-keygen -R '[{self.device.host}]:{port}' -f {path}) and run 'edgekit devices trust {self.device.name}'",
            )
        return DeviceError(
            f"device '{self.device.name}': unknown host key {fingerprint}; it is not in {path}",
            hint=f"check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then run 'edgekit devices trust {self.device.name}' to add it",
        )

    # --- commands ---------------------------------------------------------------------------

    def _shell(self, command: str, timeout: float) -> CommandResult:
        asyncssh = require("asyncssh", "core")
        try:
            result = self._call(self._conn.run(command, check=False), timeout=timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise DeviceError(f"device '{self.device.name}': a command did not finish within {timeout:.0f} s") from None
        except (asyncssh.Error, OSError) as exc:
            raise DeviceError(f"device '{self.device.name}': connection lost: {exc}", hint="check the device and network, then retry") from None
        return CommandResult(result.exit_status if result.exit_status is not None else -1, _text(result.stdout), _text(result.stderr),
                             signal=(result.exit_signal[0] if result.exit_signal else None))

    def _check_python(self) -> None:
        result = self._shell(quote([self.python, "-c", PROBE_PYTHON]), timeout=self.device.connect_timeout + 60)
        problem = python_problem(self.device.name, self.python, result)
        if problem is not None:
            raise problem

    def run_python(self, script: str, args: list[str], timeout: float) -> CommandResult:
        """Run the script in the run folder under the device lock; it and its children are killed on the
        device after ``timeout`` seconds."""
        if self.remote_dir is None:
            raise RuntimeError("SSHTransport used outside 'with'")
        seconds = max(1, int(timeout))
        argv = guarded(self.python, self.lock_path, self.lock_timeout, seconds, script, args)
        result = self._shell(f"cd {shlex.quote(self.remote_dir)} && exec {quote(argv)}", timeout=seconds + self.lock_timeout + 30)
        return interpret_guard(result, f"device '{self.device.name}'")

    # --- files ------------------------------------------------------------------------------

    def upload(self, local: Path, name: str) -> None:
        """Upload under a hidden name, check its sha256 on the device, then rename. Retried once on a dropped connection."""
        try:
            self._upload_once(local, name)
        except _ConnectionDropped as first:
            try:
                self._reconnect()
                self._upload_once(local, name)
            except (_ConnectionDropped, DeviceError) as second:
                raise DeviceError(f"device '{self.device.name}': the connection dropped while uploading {name} ({first}); the retry failed too ({second})",
                                  hint="check the device and network, then run again") from None

    def _reconnect(self) -> None:
        for conn in (self._conn, self._tunnel):
            if conn is not None:
                conn.close()
        self._conn = self._tunnel = None
        self._call(self._connect())

    def _upload_once(self, local: Path, name: str) -> None:
        asyncssh = require("asyncssh", "core")
        assert self.remote_dir is not None
        final = f"{self.remote_dir}/{name}"
        partial = f"{self.remote_dir}/.{name}.partial"
        self._ensure_space(local)

        async def put() -> None:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.put(str(local), partial, recurse=local.is_dir())

        try:
            self._call(put(), timeout=self.device.upload_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise DeviceError(f"device '{self.device.name}': uploading {name} took longer than {self.device.upload_timeout:.0f} s",
                              hint="raise upload_timeout in devices.toml, or check the link speed") from None
        except asyncssh.SFTPError as exc:
            raise DeviceError(f"device '{self.device.name}': writing {name} failed: {exc.reason}",
                              hint=f"the device's disk may be full or {self.device.work_dir} not writable") from None
        except (asyncssh.Error, OSError, EOFError) as exc:
            raise _ConnectionDropped(str(exc) or type(exc).__name__) from None
        expected = sha256_tree(local)
        check = self._shell(quote([self.python, "-c", REMOTE_HASH, partial]), timeout=self.device.upload_timeout)
        got = check.stdout.strip()
        if check.exit_code != 0 or got != expected:
            self._shell(f"rm -rf {shlex.quote(partial)}", timeout=60)
            raise DeviceError(f"device '{self.device.name}': {name} arrived corrupted (sha256 {got[:16] or 'unreadable'}…, expected {expected[:16]}…)",
                              hint="retry; if it persists, check the device's storage")
        moved = self._shell(f"mv -f {shlex.quote(partial)} {shlex.quote(final)}", timeout=60)
        if moved.exit_code != 0:
            raise DeviceError(f"device '{self.device.name}': cannot move {name} into place: {moved.stderr.strip()}")

    def _ensure_space(self, local: Path) -> None:
        needed = size_of(local)
        check = self._shell(quote([self.python, "-c", "import shutil,sys; print(shutil.disk_usage(sys.argv[1]).free)", self.remote_dir or "."]), timeout=60)
        try:
            free = int(check.stdout.strip())
        except ValueError:
            return  # cannot tell; the upload itself will report a write failure
        if free < needed + (1 << 20):
            raise DeviceError(f"device '{self.device.name}': not enough free disk in {self.device.work_dir} for {local.name} "
                              f"({free / 1024**2:.1f} MiB free, {needed / 1024**2:.1f} MiB needed)",
                              hint="free space on the device or point work_dir at a larger disk")

    def download(self, name: str, local: Path) -> None:
        asyncssh = require("asyncssh", "core")

        async def get() -> None:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.get(f"{self.remote_dir}/{name}", str(local))

        try:
            self._call(get(), timeout=self.device.upload_timeout)
        except asyncssh.SFTPNoSuchFile:
            raise DeviceError(f"device '{self.device.name}': the runner did not produce {name}") from None
        except (asyncssh.Error, OSError, asyncio.TimeoutError, TimeoutError) as exc:
            raise DeviceError(f"device '{self.device.name}': downloading {name} failed: {exc}") from None



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


class _ConnectionDropped(Exception):
    pass


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def trust_host(device: Device, assume_yes: bool, confirm: Any) -> tuple[str, Path]:
    """Fetch the device's host key, show its fingerprint, and append it to known_hosts once confirmed."""
    asyncssh = require("asyncssh", "core")
    port = device.port or 22
    loop = asyncio.new_event_loop()
    try:
        key = loop.run_until_complete(asyncio.wait_for(asyncssh.get_server_host_key(device.host, port), device.connect_timeout))
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

