"""`edgekit verify BUILD [--device ...]`: verify an existing build again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.build import device_transports, junit_on_exit
from edgekit.cli.render import print_summary


@cli.command(context_settings=CONTEXT)
@click.argument("build", type=click.Path(path_type=Path))
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME", help="Device(s) to verify on (default: this host). Repeatable.")
@click.option("--model", type=click.Path(path_type=Path), help="The source model, if it moved since the build.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML: one testcase per device x output (for CI test reports).")
@click.option("--json", "as_json", is_flag=True, help="Print only the updated report JSON.")
def verify(build: Path, devices: tuple[str, ...], model: Path | None, keep_remote: bool, junit_path: Path | None, as_json: bool) -> None:
    """Verify an existing build again: BUILD is its output folder, report, or artifact.

    The artifact's sha256 is checked against the report first. Exit codes as for 'build'.
    """
    from edgekit.report import report_to_dict
    from edgekit.reverify import reverify

    transports, _ = device_transports(devices, keep_remote)
    folder = build if build.is_dir() else build.parent
    with junit_on_exit(junit_path, folder, "verify", what="verify"):
        report, error = reverify(build, transports, model)
        data = report_to_dict(report)
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            print_summary(data, report.report_path)
        if error is not None:
            raise error
    if report.verification.status == "failed":
        sys.exit(1)
