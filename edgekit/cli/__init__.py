"""The edgekit command line: one module per command group, rendering in :mod:`edgekit.cli.render`."""

from __future__ import annotations

from edgekit.cli import build, cache, devices, doctor, emulator, inspect, locate, smoke, targets, verify  # noqa: F401  (they register their commands)
from edgekit.cli.app import cli


def main() -> None:
    cli(prog_name="edgekit")


__all__ = ["cli", "main"]
