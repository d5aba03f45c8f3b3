"""`edgekit smoke OUT --device GROUP`: re-verify a shipped artifact on a fleet, with a latency regression check."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.build import device_transports


@cli.command(context_settings=CONTEXT)
@click.argument("build", type=click.Path(path_type=Path))
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME", help="Device(s) or group to check (default: this host). Repeatable.")
@click.option("--threshold", type=click.FloatRange(0.0, 10.0), default=0.20, show_default=True,
              help="A p50 latency more than this fraction above the device's last passing run is a regression...")
@click.option("--min-ms", type=click.FloatRange(0.0), default=0.25, show_default=True, help="...and more than this many milliseconds above it.")
@click.option("--every", type=click.FloatRange(1.0, 86400.0), help="Repeat every N seconds (with --count; for unattended runs prefer cron, see docs/ci.md).")
@click.option("--count", type=click.IntRange(1, 10000), default=1, show_default=True, help="Number of rounds.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML of the last round (one testcase per device x output, plus latency).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="[PRECISION:]KEY=VALUE",
              help="Override a pass criterion of the target profile (as for 'edgekit verify'), e.g. min_sqnr_db=30. Repeatable.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per round.")
def smoke(build: Path, devices: tuple[str, ...], threshold: float, min_ms: float, every: float | None, count: int,
          junit_path: Path | None, tolerances: tuple[str, ...], keep_remote: bool, as_json: bool) -> None:
    """Re-verify the build in BUILD on devices: sha256, numerics, and p50 latency against the last passing run
    (kept in BUILD/edgekit-smoke.json).

    Exit codes: 0 passed; 1 numerics failed on a device; 3 the artifact or report is missing or changed;
    6-11 a device could not be reached or run (the others are still checked; the codes as for build); 12 latency regression.
    """
    from edgekit import junit
    from edgekit.cli.render import print_smoke
    from edgekit.smoke import smoke_round

    if every is not None and count == 1:
        raise click.UsageError("--every needs --count N (how many rounds); for a schedule without end use cron, see docs/ci.md")
    transports, _ = device_transports(devices, keep_remote)
    worst = 0
    for index in range(count):
        if index:
            time.sleep(every or 0)
        result = smoke_round(build, transports, threshold, min_ms, tolerances)
        if junit_path is not None:
            junit.write(junit_path, result.junit)
        if as_json:
            click.echo(json.dumps({"at": result.at, "exit_code": result.exit_code,
                                   "devices": [{**d.__dict__, "verdict": d.verdict} for d in result.devices]}))
        else:
            print_smoke(result)
        worst = _worse(worst, result.exit_code)
    sys.exit(worst)


def _worse(a: int, b: int) -> int:
    """Numerics failures outrank device faults, which outrank latency regressions."""
    order = {0: 0, 7: 1, 6: 2, 1: 3}
    return max(a, b, key=lambda code: order.get(code, 4))
