"""Helpers shared by the device fault suites: a devices.toml for a test server, the real verify path, the CLI,
and finding the runner's processes on the "device" (this machine's process table)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edgekit.calibration import random_samples
from edgekit.devices import Device, load_book, resolve_devices
from edgekit.modelio import load_model
from edgekit.profiles import resolve_target
from edgekit.reference import run_reference
from edgekit.remote.bundle import BUNDLE_NAME
from edgekit.report import load_report
from edgekit.reverify import _checked_artifact
from edgekit.verify import verify_artifact
from tests.sshd import processes_in

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]
RUNNER = BUNDLE_NAME  # the remote zipapp: `python edgekit_remote.pyz run ...` on the device


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, timeout=600, env=env)


def device_with(server, tmp_path: Path, monkeypatch, name: str = "localhost-ssh", **overrides) -> str:
    """Point $EDGEKIT_DEVICES at a devices.toml naming ``server`` as ``name``."""
    book = server.write_devices(tmp_path / f"{name}.toml", server.device_table(name, **overrides))
    monkeypatch.setenv("EDGEKIT_DEVICES", str(book))
    return name


def device_for(server, tmp_path: Path, name: str = "dev", **overrides) -> Device:
    """The Device a devices.toml entry for ``server`` gives (parsed like the user's file)."""
    book = server.write_devices(tmp_path / f"{name}.toml", server.device_table(name, **overrides))
    (device,) = resolve_devices([name], load_book(book))
    return device


def verify_on(built: Path, transport, runs: int = 5):
    """Verify the session's built artifact through ``transport`` (the real verify path)."""
    data = load_report(built)
    artifact = _checked_artifact(data, built)
    loaded = load_model(Path(data["source_model"]))
    samples = random_samples(loaded.inputs, 2, seed=0)
    tolerance = resolve_target("arm").tolerance_for("fp32")
    return verify_artifact(artifact, samples, run_reference(loaded.proto, samples), tolerance, transport, warmup=1, runs=runs)


def runner_processes(work_dir: Path) -> tuple[int | None, int | None]:
    """(runner pid, guard pid) of the run going on under ``work_dir``; None for what is not running."""
    runner = guard = None
    for pid, argv in processes_in(work_dir).items():
        if argv[1:2] == [RUNNER]:
            runner = pid
        elif argv[1:2] == ["-c"] and RUNNER in argv:
            guard = pid
    return runner, guard


def wait_for_runner(work_dir: Path, seconds: float = 120) -> tuple[int, int]:
    """Wait until the runner itself (not only its guard) runs under ``work_dir``; (runner pid, guard pid)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runner, guard = runner_processes(work_dir)
        if runner is not None and guard is not None:
            return runner, guard
        time.sleep(0.05)
    raise AssertionError(f"no runner started under {work_dir} within {seconds} s")
