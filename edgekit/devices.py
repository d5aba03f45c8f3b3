"""Devices: where verification runs, described once in ``devices.toml`` (or ad hoc as user@host[:port]).

    [devices.pi5]
    host = "192.168.1.50"        # or an alias from ~/.ssh/config
    user = "pi"
    port = 22
    key_file = "~/.ssh/id_ed25519"
    target = "arm"               # the profile this device runs (lets `--target` be omitted)
    python = "/usr/bin/python3"  # the remote interpreter (name it explicitly: login shells rewrite PATH)
    work_dir = "/tmp/edgekit"    # per-run folders are created inside and removed afterwards

    [devices.pi5-emulated]     # no board: the emulated aarch64 device (`edgekit emulator setup aarch64`)
    emulator = "aarch64"
    cpu = "cortex-a76"           # default: the target profile's hardware.emulator_cpu
    target = "arm"

    [groups]
    fleet = ["pi5", "orin"]

Looked up in $EDGEKIT_DEVICES, ./devices.toml, then ~/.config/edgekit/devices.toml. Two names need no
entry: ``host`` (this machine, to compare beside devices) and ``emu:ARCH[:CPU]`` (an emulated device).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgekit.errors import DeviceError, InputError

DEVICE_KEYS = {
    "host", "port", "user", "key_file", "known_hosts", "jump_host", "target", "python", "work_dir",
    "connect_timeout", "handshake_timeout", "auth_timeout", "command_timeout", "keepalive_interval",
    "keepalive_count_max", "upload_timeout", "run_timeout", "lock_timeout", "description",
}
TIMEOUT_KEYS = ("connect_timeout", "handshake_timeout", "auth_timeout", "command_timeout", "keepalive_interval",
                "upload_timeout", "run_timeout", "lock_timeout")
EMULATOR_KEYS = {"emulator", "cpu", "target", "run_timeout", "lock_timeout", "description"}
HOST_NAME, EMULATOR_PREFIX = "host", "emu:"
_AD_HOC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    port: int | None = None  # None: from ~/.ssh/config, else 22
    user: str | None = None
    key_file: Path | None = None  # None: the SSH agent and ~/.ssh defaults
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    jump_host: str | None = None  # user@host[:port] to tunnel through
    target: str | None = None
    python: str = "python3"
    work_dir: str = "/tmp/edgekit"
    # Deadlines (seconds), each stated in docs/devices.md: the TCP connection; from there to the start of
    # authentication (SSH banner + key exchange); authentication; each short remote command (python
    # probe, hash check, rename, cleanup); a silent connection is given up after about
    # keepalive_interval * (keepalive_count_max + 1).
    connect_timeout: float = 15.0
    handshake_timeout: float = 30.0
    auth_timeout: float = 30.0
    command_timeout: float = 60.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    upload_timeout: float = 300.0
    run_timeout: float = 600.0
    lock_timeout: float = 900.0
    description: str = ""
    source: Path | None = field(default=None, compare=False)
    emulator: str | None = None  # an architecture ("aarch64"): runs under qemu here instead of over SSH
    cpu: str | None = None  # the emulated CPU model (default: the target profile's)

    @property
    def is_host(self) -> bool:
        return self.name == HOST_NAME and not self.host

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "host": self.host, "port": self.port, "user": self.user,
            "key_file": str(self.key_file) if self.key_file else None,
            "known_hosts": str(self.known_hosts) if self.known_hosts else None,
            "jump_host": self.jump_host, "target": self.target, "python": self.python, "work_dir": self.work_dir,
            "timeouts": {"connect": self.connect_timeout, "handshake": self.handshake_timeout, "auth": self.auth_timeout,
                         "command": self.command_timeout, "upload": self.upload_timeout, "run": self.run_timeout,
                         "lock": self.lock_timeout, "keepalive_interval": self.keepalive_interval,
                         "keepalive_count_max": self.keepalive_count_max},
            "source": str(self.source) if self.source else None,
            "emulator": self.emulator, "cpu": self.cpu,
        }


@dataclass
class DeviceBook:
    devices: dict[str, Device]
    groups: dict[str, list[str]]
    source: Path | None


def config_paths() -> list[Path]:
    paths = []
    if os.environ.get("EDGEKIT_DEVICES"):
        paths.append(Path(os.environ["EDGEKIT_DEVICES"]).expanduser())
    paths.append(Path.cwd() / "devices.toml")
    paths.append(Path.home() / ".config" / "edgekit" / "devices.toml")
    return paths


def _fail(source: Path, key: str, problem: str) -> InputError:
    return InputError(f"{source}: key '{key}': {problem}", hint="see docs/devices.md for the devices.toml format")


def _parse_device(name: str, table: dict[str, Any], source: Path) -> Device:
    prefix = f"devices.{name}"
    if not isinstance(table, dict):
        raise _fail(source, prefix, "must be a table")
    if name == HOST_NAME or name.startswith(EMULATOR_PREFIX):
        raise _fail(source, prefix, f"'{HOST_NAME}' and '{EMULATOR_PREFIX}...' are reserved device names; pick another")
    if "emulator" in table:
        return _parse_emulated(name, table, source)
    for key in table:
        if key == "cpu":
            raise _fail(source, f"{prefix}.cpu", 'only emulated devices take a cpu (add emulator = "aarch64", or remove it)')
        if key not in DEVICE_KEYS:
            close = difflib.get_close_matches(key, sorted(DEVICE_KEYS), n=1)
            raise _fail(source, f"{prefix}.{key}", "unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""))
    if not isinstance(table.get("host"), str) or not table["host"]:
        raise _fail(source, f"{prefix}.host", "is required (a host name, address, or ~/.ssh/config alias)")

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise _fail(source, f"{prefix}.{key}", f"expected a string, got {value!r}")
        return value

    def number(key: str) -> float:
        value = table.get(key, Device.__dataclass_fields__[key].default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise _fail(source, f"{prefix}.{key}", f"expected a positive number of seconds, got {value!r}")
        return float(value)

    keepalive_count_max = table.get("keepalive_count_max", Device.keepalive_count_max)
    if isinstance(keepalive_count_max, bool) or not isinstance(keepalive_count_max, int) or keepalive_count_max < 1:
        raise _fail(source, f"{prefix}.keepalive_count_max", f"expected a whole number >= 1, got {keepalive_count_max!r}")

    port = table.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise _fail(source, f"{prefix}.port", f"expected a port number, got {port!r}")

    def path(key: str) -> Path | None:
        value = text(key)
        if value is None:
            return None
        resolved = Path(value).expanduser()
        return resolved if resolved.is_absolute() else (source.parent / resolved)

    return Device(
        name=name, host=table["host"], port=port, user=text("user"), key_file=path("key_file"), known_hosts=path("known_hosts"),
        jump_host=text("jump_host"), target=text("target"), python=text("python") or "python3",
        work_dir=text("work_dir") or "/tmp/edgekit", keepalive_count_max=keepalive_count_max,
        **{key: number(key) for key in TIMEOUT_KEYS}, description=text("description") or "", source=source,
    )


def _parse_emulated(name: str, table: dict[str, Any], source: Path) -> Device:
    from edgekit.emulator import SPECS

    prefix = f"devices.{name}"
    for key in table:
        if key not in EMULATOR_KEYS:
            raise _fail(source, f"{prefix}.{key}", f"an emulated device (emulator = ...) takes only {', '.join(sorted(EMULATOR_KEYS))}")
    for key in ("emulator", "cpu", "target", "description"):
        if key in table and not isinstance(table[key], str):
            raise _fail(source, f"{prefix}.{key}", f"expected a string, got {table[key]!r}")
    if table["emulator"] not in SPECS:
        raise _fail(source, f"{prefix}.emulator", f"unknown architecture {table['emulator']!r}; known: {', '.join(SPECS)}")
    for key in ("run_timeout", "lock_timeout"):
        value = table.get(key, 600.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise _fail(source, f"{prefix}.{key}", f"expected a positive number of seconds, got {value!r}")
    return Device(name=name, host="", emulator=table["emulator"], cpu=table.get("cpu"), target=table.get("target"),
                  run_timeout=float(table.get("run_timeout", 600.0)), lock_timeout=float(table.get("lock_timeout", 900.0)),
                  description=table.get("description", ""), source=source)


def parse_emulated_spec(spec: str) -> Device:
    """``emu:ARCH`` or ``emu:ARCH:CPU`` (e.g. emu:aarch64:cortex-a72)."""
    from edgekit.emulator import SPECS

    arch, _, cpu = spec[len(EMULATOR_PREFIX):].partition(":")
    if arch not in SPECS:
        raise DeviceError(f"--device {spec!r}: no emulator for '{arch}'", hint=f"known: {', '.join(EMULATOR_PREFIX + a for a in SPECS)}")
    return Device(name=spec, host="", emulator=arch, cpu=cpu or None)


def load_book(path: Path | None = None) -> DeviceBook:
    """The first devices.toml found (or ``path``); an empty book if there is none."""
    candidates = [path] if path else config_paths()
    for candidate in candidates:
        if candidate is None or not candidate.is_file():
            continue
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"{candidate}: cannot read devices file: {exc}") from None
        unknown = set(data) - {"devices", "groups"}
        if unknown:
            raise _fail(candidate, sorted(unknown)[0], "unknown top-level key; use [devices.NAME] tables and a [groups] table")
        devices = {name: _parse_device(name, table, candidate) for name, table in data.get("devices", {}).items()}
        groups = data.get("groups", {})
        for group, members in groups.items():
            if not isinstance(members, list) or not all(isinstance(m, str) and m in devices for m in members):
                raise _fail(candidate, f"groups.{group}", f"must list device names defined in [devices]; got {members!r}")
        return DeviceBook(devices, groups, candidate)
    if path is not None:
        raise InputError(f"{path}: devices file not found")
    return DeviceBook({}, {}, None)


def parse_ad_hoc(spec: str) -> Device:
    """``user@host[:port]`` or a bare host / ~/.ssh/config alias."""
    match = _AD_HOC.match(spec)
    if not match:
        raise InputError(f"--device {spec!r}: not a device name, group, or user@host[:port]")
    host = match["host"].strip("[]")
    return Device(name=spec, host=host, port=int(match["port"]) if match["port"] else None, user=match["user"])


def resolve_devices(specs: list[str], book: DeviceBook | None = None) -> list[Device]:
    """Device names, group names, or ad-hoc specs -> devices (groups expanded, duplicates dropped)."""
    book = book or load_book()
    found: list[Device] = []
    for spec in specs:
        if spec == HOST_NAME:
            chosen = [Device(name=HOST_NAME, host="")]
        elif spec.startswith(EMULATOR_PREFIX):
            chosen = [parse_emulated_spec(spec)]
        elif spec in book.groups:
            chosen = [book.devices[name] for name in book.groups[spec]]
        elif spec in book.devices:
            chosen = [book.devices[spec]]
        elif "@" in spec or ":" in spec or "." in spec or spec == "localhost":
            chosen = [parse_ad_hoc(spec)]
        else:
            names = sorted(set(book.devices) | set(book.groups))
            close = difflib.get_close_matches(spec, names, n=2)
            where = f" in {book.source}" if book.source else " (no devices.toml found)"
            # A bare word may still be a ~/.ssh/config alias: allow it, asyncssh resolves it.
            if _ssh_config_has(spec):
                chosen = [parse_ad_hoc(spec)]
            else:
                raise DeviceError(
                    f"unknown device '{spec}'{where}",
                    hint=(f"did you mean {', '.join(repr(c) for c in close)}? " if close else "")
                    + "define it in devices.toml, name a ~/.ssh/config Host, or pass user@host[:port]",
                )
        for device in chosen:
            if device not in found:
                found.append(device)
    return found


def _ssh_config_has(alias: str) -> bool:
    config = Path.home() / ".ssh" / "config"
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) >= 2 and parts[0].lower() == "host" and alias in parts[1:]:
            return True
    return False
