"""Run the device runner on an emulated ARM CPU: qemu-user and the sysroot `edgekit emulator setup` built.

Everything but the interpreter is LocalTransport's: a fresh work folder per run, the host's lock (an
emulator run takes the host's cores, so it never overlaps a host latency measurement), and the guard,
which runs on the host's Python and starts only the runner under qemu, in its own process group, so a
timeout kills the emulated process with everything it started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.emulator import Emulator, find_emulator
from edgekit.errors import ProfileError
from edgekit.transport.local import LocalTransport

if TYPE_CHECKING:
    from edgekit.profiles import TargetProfile

# Timings under qemu measure the translator, not the device: a few runs show the runner works, no more.
EMULATED_WARMUP, EMULATED_RUNS = 1, 5


class EmulatedTransport(LocalTransport):
    where = "emulated"

    def __init__(self, arch: str = "aarch64", *, cpu: str | None = None, name: str | None = None, keep: bool = False,
                 emulator: Emulator | None = None, run_timeout: float | None = None, lock_timeout: float | None = None) -> None:
        super().__init__(keep=keep)
        self.emulator = emulator or find_emulator(arch)
        self.device_name = name or f"emu:{arch}"
        self.chosen_cpu = cpu  # from the device entry; wins over the profile
        self.cpu = self.emulator.check_cpu(cpu or self.emulator.spec.default_cpu)
        if run_timeout is not None:
            self.run_timeout = run_timeout
        if lock_timeout is not None:
            self.lock_timeout = lock_timeout

    @property
    def place(self) -> str:
        return f"on '{self.device_name}' (qemu {self.emulator.spec.arch}, {self.cpu})"

    def use_profile(self, profile: TargetProfile) -> None:
        if self.chosen_cpu is not None:
            return
        cpu = profile.hardware.get("emulator_cpu", self.emulator.spec.default_cpu)
        if not isinstance(cpu, str):
            raise ProfileError(f"{profile.source}: key 'hardware.emulator_cpu': expected a qemu CPU model name, got {cpu!r}")
        self.cpu = self.emulator.check_cpu(cpu)

    def latency_plan(self, warmup: int, runs: int) -> tuple[int, int]:
        return min(warmup, EMULATED_WARMUP), min(runs, EMULATED_RUNS)

    def report_fields(self) -> dict[str, Any]:
        manifest = self.emulator.manifest
        return {"cpu": self.cpu, "emulator": {"arch": self.emulator.spec.arch, "cpu": self.cpu, "qemu": manifest["qemu"]["version"],
                                              "python": manifest["python"]["version"], "created_at": manifest.get("created_at"),
                                              "lock_sha256": manifest.get("lock_sha256")}}

    def runner_command(self) -> list[str]:
        return self.emulator.command(self.cpu)

    def environment(self) -> dict[str, str]:
        return self.emulator.environment(super().environment())
