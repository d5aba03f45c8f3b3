"""`edgekit verify BUILD [--device ...]`: verify an existing build again."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.build import device_transports, junit_on_exit, show_report


@cli.command(context_settings=CONTEXT)
@click.argument("build", type=click.Path(path_type=Path))
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME", help="Device(s) to verify on (default: this host). Repeatable.")
@click.option("--model", type=click.Path(path_type=Path), help="The source model, if it moved since the build.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device.")
@click.option("--tolerance", "tolerances", multiple=True, metavar="[PRECISION:]KEY=VALUE",
              help="Override a pass criterion of the target profile: min_cosine, min_sqnr_db or max_abs_error, e.g. min_sqnr_db=20. Repeatable.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML: one testcase per device x output (for CI test reports).")
@click.option("--json", "as_json", is_flag=True, help="Print only the updated report JSON.")
def verify(build: Path, devices: tuple[str, ...], model: Path | None, keep_remote: bool, tolerances: tuple[str, ...], junit_path: Path | None,
           as_json: bool) -> None:
    """Verify an existing build again: BUILD is its output folder, report, or artifact.

    Every artifact file's sha256 is checked against the report first. The pass criteria come from the target
    profile (and --tolerance), never from the report being checked. Exit codes as for 'build'.
    """
    from edgekit.reverify import reverify

    transports, _ = device_transports(devices, keep_remote)
    folder = build if build.is_dir() else build.parent
    with junit_on_exit(junit_path, folder, "verify", what="verify"):
        report, error = reverify(build, transports, model, tolerances)
        show_report(report, as_json, quiet=False)
        if error is not None:
            raise error
    if report.verification.status == "failed":
        sys.exit(1)
