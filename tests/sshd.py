"""A real OpenSSH sshd for tests: 127.0.0.1, a free port, its own host key, an authorized user key,
and a known_hosts file, all in a temp folder. Installs nothing: .ci/run installs openssh-server."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def have_sshd() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class SSHServer:
    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.root / "host_key")
        self.user_key = keygen(self.root / "user_key")
        self.authorized_keys = self.root / "authorized_keys"
        shutil.copy(self.user_key.with_suffix(".pub"), self.authorized_keys)
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key.with_suffix('.pub').read_text().split(' ', 2)[0]} "
                                    f"{self.host_key.with_suffix('.pub').read_text().split(' ', 2)[1]}\n")
        self.work_dir = self.root / "remote"
        self.log = self.root / "sshd.log"
        self.config = self.root / "sshd_config"
        self.config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
AuthorizedKeysFile {self.authorized_keys}
PidFile {self.root / 'sshd.pid'}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
Subsystem sftp internal-sftp
MaxStartups 50
LogLevel VERBOSE
""")

    @property
    def user(self) -> str:
        return getpass.getuser()

    def start(self) -> SSHServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)], start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log.read_text() if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """Kill the listener and every session process it forked: the device dropped off the network."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def stop(self) -> None:
        self.kill()

    def device_table(self, name: str = "localhost-ssh", **overrides: object) -> str:
        values = {"host": "127.0.0.1", "port": self.port, "user": self.user, "key_file": str(self.user_key),
                  "known_hosts": str(self.known_hosts), "python": sys.executable, "work_dir": str(self.work_dir),
                  "target": "arm", "connect_timeout": 10, **overrides}
        lines = [f"[devices.{_toml_key(name)}]"]
        for key, value in values.items():
            lines.append(f"{key} = {value}" if isinstance(value, (int, float)) else f"{key} = {_toml_string(str(value))}")
        return "\n".join(lines) + "\n"

    def write_devices(self, path: Path, *tables: str) -> Path:
        path.write_text("\n".join(tables or (self.device_table(),)))
        return path


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else _toml_string(name)
