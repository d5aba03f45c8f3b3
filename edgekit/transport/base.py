"""The Transport interface: the verifier uploads files, runs a command and downloads results
through it without knowing whether it talks to this host or to a device over SSH."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    signal: str | None = None  # e.g. "ALRM" when a timeout alarm ended the process


class Transport(ABC):
    #: "host" for this machine, "device" for anything reached over the network
    where: Literal["host", "device"] = "host"
    #: the device's name as shown in reports (None on the host)
    device_name: str | None = None
    #: the Python interpreter that runs the device runner
    python: str = "python3"
    #: the lock file that serializes runs on this machine, how long to wait for it, and the run timeout
    lock_path: str | None = None
    lock_timeout: float = 900.0
    run_timeout: float = 600.0

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        """Run ``python script args...`` inside the work directory; kill it after ``timeout`` s."""

    def describe(self) -> dict[str, object]:
        return {"where": self.where, "device": self.device_name, "python": self.python}
