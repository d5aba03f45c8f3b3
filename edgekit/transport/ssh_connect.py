"""Connecting to a device over SSH: each stage has its own deadline (devices.toml) and its own error.

    TCP connection       connect_timeout     DeviceUnreachable (refused, unknown name, no route, no answer)
    banner + key exchange handshake_timeout  DeviceStalled (no banner / key exchange never finishes)
    authentication       auth_timeout        DeviceStalled; a refusal is DeviceAuthFailed (never retried)
    silent connection    keepalives          DeviceStalled (after about interval * (count_max + 1) s)
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit._lazy import require
from edgekit.devices import Device
from edgekit.errors import DeviceAuthFailed, DeviceConnectionLost, DeviceError, DeviceStalled, DeviceUnreachable


@dataclass
class Stages:
    """How far a connection got, reported by asyncssh's client callbacks."""

    tcp: asyncio.Event = field(default_factory=asyncio.Event)
    auth_started: asyncio.Event = field(default_factory=asyncio.Event)
    conn: Any = None
    lost: BaseException | None = None  # why the connection closed, once it has


def _client_class() -> type:
    asyncssh = require("asyncssh", "core", purpose="SSH devices")

    class StageClient(asyncssh.SSHClient):
        def __init__(self, stages: Stages) -> None:
            self.stages = stages

        def connection_made(self, conn: Any) -> None:
            self.stages.conn = conn
            self.stages.tcp.set()

        def begin_auth(self, username: str) -> None:
            self.stages.auth_started.set()

        def connection_lost(self, exc: BaseException | None) -> None:
            self.stages.lost = exc

    return StageClient


def known_hosts_path(device: Device) -> Path:
    return device.known_hosts or Path.home() / ".ssh" / "known_hosts"


def client_options(device: Device) -> dict[str, Any]:
    asyncssh = require("asyncssh", "core", purpose="SSH devices")
    path = known_hosts_path(device)
    # A missing known_hosts file means "no key is trusted", never "trust anything".
    known = asyncssh.import_known_hosts(path.read_text()) if path.is_file() else asyncssh.import_known_hosts("")
    options: dict[str, Any] = {"known_hosts": known, "keepalive_interval": device.keepalive_interval,
                               "keepalive_count_max": device.keepalive_count_max,
                               # a backstop only: the stages below end a stalled login first
                               "login_timeout": device.handshake_timeout + device.auth_timeout + 5}
    if device.port:
        options["port"] = device.port
    if device.user:
        options["username"] = device.user
    if device.key_file:
        options["client_keys"] = [str(device.key_file)]
    return options


async def connect(device: Device) -> tuple[Any, Any, Stages]:
    """(connection, jump-host tunnel or None, stages of the connection)."""
    options = client_options(device)
    tunnel = None
    if device.jump_host:
        from edgekit.devices import parse_ad_hoc

        jump = parse_ad_hoc(device.jump_host)
        jump_device = Device(name=f"{device.name} (jump host {device.jump_host})", host=jump.host, port=jump.port or 22, user=jump.user,
                             known_hosts=device.known_hosts, key_file=device.key_file, connect_timeout=device.connect_timeout,
                             handshake_timeout=device.handshake_timeout, auth_timeout=device.auth_timeout,
                             keepalive_interval=device.keepalive_interval, keepalive_count_max=device.keepalive_count_max)
        jump_options = {k: v for k, v in options.items() if k not in ("port", "username")}
        tunnel, _ = await _connect_staged(jump_device, jump_options)
        options["tunnel"] = tunnel
    try:
        conn, stages = await _connect_staged(device, options)
    except BaseException:
        if tunnel is not None:
            tunnel.abort()
        raise
    return conn, tunnel, stages


async def _reached(task: asyncio.Future, event: asyncio.Event | None, seconds: float) -> bool:
    """Wait until ``event`` is set (or ``task`` ends, when event is None) within ``seconds``; a failed task raises."""
    waiter = asyncio.ensure_future(event.wait()) if event is not None else None
    try:
        await asyncio.wait([f for f in (task, waiter) if f is not None], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if waiter is not None:
            waiter.cancel()
    if task.done():
        task.result()
        return True
    return event is not None and event.is_set()


async def _connect_staged(device: Device, options: dict[str, Any]) -> tuple[Any, Stages]:
    asyncssh = require("asyncssh", "core", purpose="SSH devices")
    stages = Stages()
    client = _client_class()
    where = f"device '{device.name}' ({device.host}:{device.port or 22})"
    task = asyncio.ensure_future(asyncssh.connect(device.host, client_factory=lambda: client(stages), **options))
    try:
        if not await _reached(task, stages.tcp, device.connect_timeout):
            raise DeviceUnreachable(f"{where} is unreachable: no answer to the TCP connection within {device.connect_timeout:g} s (connect_timeout)",
                                    hint="check that the device is on and on this network, its address and port, and firewalls; or raise connect_timeout")
        if not await _reached(task, stages.auth_started, device.handshake_timeout):
            banner = stages.conn.get_extra_info("server_version") if stages.conn is not None else None
            if banner:
                problem = f"its SSH server sent its banner ({banner}) but the key exchange did not finish within {device.handshake_timeout:g} s"
            else:
                problem = f"it accepted the TCP connection but sent no SSH banner within {device.handshake_timeout:g} s"
            raise DeviceStalled(f"{where}: {problem} (handshake_timeout)",
                                hint="the port may not be an SSH server, or sshd is overloaded or hung; check the device, or raise handshake_timeout")
        if not await _reached(task, None, device.auth_timeout):
            raise DeviceStalled(f"{where}: authentication got no answer within {device.auth_timeout:g} s (auth_timeout)",
                                hint="the device's sshd may be stuck on a slow key lookup (AuthorizedKeysCommand, LDAP, DNS); check its log, or raise auth_timeout")
        return task.result(), stages
    except asyncssh.HostKeyNotVerifiable:
        raise await host_key_error(device) from None
    except asyncssh.PermissionDenied:
        raise DeviceAuthFailed(f"{where}: authentication failed for user '{device.user or 'default'}': the device refused every key offered (not retried)",
                               hint="check user and key_file in devices.toml, that the public key is in the device's ~/.ssh/authorized_keys, or that your SSH agent holds the key") from None
    except ConnectionRefusedError:
        raise DeviceUnreachable(f"{where} is unreachable: connection refused (nothing listens on that port)",
                                hint="check the port, and that sshd runs on the device") from None
    except socket.gaierror as exc:
        raise DeviceUnreachable(f"{where} is unreachable: the host name does not resolve ({exc.strerror or exc})",
                                hint="check the host name, or use an address") from None
    except (ConnectionResetError, BrokenPipeError, asyncssh.ConnectionLost) as exc:
        raise DeviceConnectionLost(f"{where}: the device closed the connection during the SSH handshake: {exc or type(exc).__name__}",
                                   hint="the device's sshd may limit connections (MaxStartups) or refuse this client; check its log") from None
    except OSError as exc:
        raise DeviceUnreachable(f"{where} is unreachable: {exc.strerror or exc}",
                                hint="check the host name/address and port, that sshd runs on the device, and the network") from None
    except asyncssh.Error as exc:
        raise DeviceError(f"{where}: the SSH handshake failed: {exc}") from None
    finally:
        if not task.done() or task.cancelled() or task.exception() is not None:
            task.cancel()
            if stages.conn is not None:
                stages.conn.abort()
            await asyncio.gather(task, return_exceptions=True)  # let the cancelled attempt finish


def session_error(device: Device, doing: str, exc: BaseException | None, stages: Stages | None) -> DeviceError:
    """The error for a connection that failed after it was established."""
    asyncssh = require("asyncssh", "core")
    reason = (stages.lost if stages is not None else None) or exc
    if isinstance(reason, asyncssh.ConnectionLost) and "keepalive" in str(reason):  # asyncssh's own keepalive verdict
        waited = device.keepalive_interval * (device.keepalive_count_max + 1)
        return DeviceStalled(f"device '{device.name}' stopped answering while {doing}: {device.keepalive_count_max} keepalives "
                             f"{device.keepalive_interval:g} s apart got no reply; given up after about {waited:g} s",
                             hint="the device may be hung or overloaded, or the network dropped; keepalive_interval and keepalive_count_max set how long edgekit waits")
    return DeviceConnectionLost(f"device '{device.name}': the connection was lost while {doing}: {reason or 'closed by the device'}",
                                hint="check the device and network, then run again")


async def host_key_error(device: Device) -> DeviceError:
    asyncssh = require("asyncssh", "core")
    port = device.port or 22
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(device.host, port), device.connect_timeout + device.handshake_timeout)
        fingerprint = key.get_fingerprint("sha256") if key else "unknown"
    except Exception:  # the fingerprint is a courtesy; the error stands without it
        fingerprint = "unknown (could not fetch it)"
    path = known_hosts_path(device)
    known = asyncssh.import_known_hosts(path.read_text()) if path.is_file() else None
    trusted = []
    if known is not None:
        try:
            trusted = known.match(device.host, "", port)[0]
        except Exception:
            trusted = []
    if trusted:
        return DeviceError(
            f"device '{device.name}': the host key CHANGED (now {fingerprint}); it does not match {path}. "
            "This can mean someone is intercepting the connection, or the device was reinstalled",
            hint=f"if you know the device was reinstalled, remove its old line from {path} (ssh-keygen -R '[{device.host}]:{port}' -f {path}) and run 'edgekit devices trust {device.name}'",
        )
    return DeviceError(
        f"device '{device.name}': unknown host key {fingerprint}; it is not in {path}",
        hint=f"check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then run 'edgekit devices trust {device.name}' to add it",
    )
