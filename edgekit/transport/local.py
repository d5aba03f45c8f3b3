"""Run the device runner on this host, in a subprocess so a crashing runtime cannot take edgekit down."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit.errors import DeviceError
from edgekit.transport.base import CommandResult, Transport, guarded, interpret_guard


class LocalTransport(Transport):
    where = "host"

    def __init__(self, python: str | None = None, keep: bool = False) -> None:
        super().__init__()
        self.python = python or sys.executable
        self.keep = keep
        self.work_dir: Path | None = None
        self.lock_path = str(Path(tempfile.gettempdir()) / "edgekit-host.lock")

    def open(self) -> None:
        self.work_dir = Path(tempfile.mkdtemp(prefix="edgekit-run-"))

    def close(self) -> None:
        if self.work_dir is not None and not self.keep:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir = None

    def _dir(self) -> Path:
        if self.work_dir is None:
            raise RuntimeError("LocalTransport used outside 'with'")
        return self.work_dir

    def upload(self, local: Path, name: str) -> None:
        target = self._dir() / name
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copyfile(local, target)

    def download(self, name: str, local: Path) -> None:
        source = self._dir() / name
        if not source.exists():
            raise DeviceError(f"the runner did not produce '{name}' on this host")
        shutil.copyfile(source, local)

    def runner_command(self) -> list[str] | None:
        """What runs the script under the guard (None: the guard's own python)."""
        return None

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run_python(self, script: str, args: list[str], timeout: float) -> CommandResult:
        argv = guarded(self.python, self.lock_path, self.lock_timeout, timeout, script, args, runner=self.runner_command())
        process = subprocess.Popen(
            argv,
            cwd=self._dir(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=self.environment(),
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout + self.lock_timeout + 30)
        except subprocess.TimeoutExpired:  # the guard itself is stuck: end everything
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return CommandResult(-9, stdout, stderr, signal="ALRM")
        return interpret_guard(CommandResult(process.returncode, stdout, stderr), "this host")
