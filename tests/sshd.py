"""Real SSH servers for tests, on 127.0.0.1 with a free port, their own host key, an authorized user key and a
known_hosts file, all in a temp folder: OpenSSH's sshd (optionally without SFTP) and Dropbear. Plus helpers
that look at the "device" side's process table. Installs nothing: .ci/run installs openssh-server and
dropbear-bin."""

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


class _Server:
    """What both servers share: the devices.toml entry naming them, and stopping them for good."""

    root: Path
    port: int
    process: subprocess.Popen | None
    user_key: Path
    known_hosts: Path
    work_dir: Path
    log: Path

    @property
    def user(self) -> str:
        return getpass.getuser()

    def _wait_listening(self) -> None:
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited with {self.process.returncode}: {self.log.read_text() if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{type(self).__name__} did not start listening")

    def kill(self) -> None:
        """Kill the listener and every session process it forked: the device dropped off the network."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGCONT)  # a stopped session would not die until continued
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


@dataclass
class SSHServer(_Server):
    """OpenSSH's sshd. ``sftp=False`` leaves out the `Subsystem sftp` line (a minimal sshd config);
    ``extra_config`` comes first, so it overrides the defaults (sshd keeps the first value of a keyword)."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    sftp: bool = True
    extra_config: str = ""

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
        self.config.write_text(f"""{self.extra_config}
Port {self.port}
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
{"Subsystem sftp internal-sftp" if self.sftp else ""}
MaxStartups 50
LogLevel VERBOSE
""")

    def start(self) -> SSHServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)], start_new_session=True)
        self._wait_listening()
        return self


DROPBEAR = shutil.which("dropbear") or "/usr/sbin/dropbear"
SFTP_SERVER_DIR = Path("/usr/lib/openssh")  # where Debian's Dropbear finds sftp-server


def have_dropbear() -> bool:
    return Path(DROPBEAR).is_file() and all(shutil.which(t) for t in ("dropbearkey", "unshare", "ssh-keygen"))


@dataclass
class DropbearServer(_Server):
    """Dropbear (Debian dropbear-bin), the SSH server of OpenWrt and Yocto boards.

    Dropbear reads the login user's ~/.ssh/authorized_keys and has no option to read another file, so
    it runs in a private mount namespace where a copy of /etc/passwd gives that user a temp folder as
    home: the real home and passwd are never touched. ``sftp=False`` also mounts an empty folder over
    /usr/lib/openssh there, so its sftp-server is missing, as on a board without openssh-sftp-server.
    As root the login user is root; otherwise a user namespace maps this user to root inside (where
    the kernel allows it).
    """

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    sftp: bool = True

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = self.root / "host_key"
        subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(self.host_key)], check=True, capture_output=True)
        public = subprocess.run(["dropbearkey", "-y", "-f", str(self.host_key)], check=True, capture_output=True, text=True).stdout
        key_line = next(line for line in public.splitlines() if line.startswith("ssh-"))
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(key_line.split()[:2])}\n")
        self.user_key = keygen(self.root / "user_key")
        self.home = self.root / "home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        self.home.chmod(0o700)
        shutil.copy(self.user_key.with_suffix(".pub"), self.home / ".ssh" / "authorized_keys")
        self.empty = self.root / "empty"
        self.empty.mkdir()
        self.work_dir = self.root / "remote"
        self.log = self.root / "dropbear.log"

    @property
    def user(self) -> str:
        return "root"

    def start(self) -> DropbearServer:
        passwd = self.root / "passwd"
        entries = [line.split(":") for line in Path("/etc/passwd").read_text().splitlines() if line.count(":") == 6]
        passwd.write_text("".join(":".join([*e[:5], str(self.home) if e[0] == "root" else e[5], e[6]]) + "\n" for e in entries))
        hide_sftp = f"mount --bind {self.empty} {SFTP_SERVER_DIR}\n" if not self.sftp and SFTP_SERVER_DIR.is_dir() else ""
        script = (f"set -e\nmount --bind {passwd} /etc/passwd\n{hide_sftp}"
                  f"exec {DROPBEAR} -r {self.host_key} -p 127.0.0.1:{self.port} -P {self.root / 'dropbear.pid'} -F -E -s\n")
        namespace = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            namespace[1:1] = ["--user", "--map-root-user"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([*namespace, "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_listening()
        return self


# --- the device's process table ----------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running (a zombie has ended; it only waits for its parent to notice)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_in(folder: Path) -> dict[int, list[str]]:
    """pid -> argv of every live process whose working directory is inside ``folder``."""
    found = {}
    root = os.path.realpath(folder)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + "/")) and alive(int(entry.name)):
            found[int(entry.name)] = argv
    return found


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def ssh_session_of(pid: int) -> int | None:
    """The sshd process serving the connection that started ``pid`` (its nearest sshd ancestor)."""
    current = parent_of(pid)
    while current and current > 1:
        try:
            if Path(f"/proc/{current}/comm").read_text().strip() == "sshd":
                return current
        except OSError:
            return None
        current = parent_of(current)
    return None


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
