"""`edgekit locate BUILD`: name the first layer where an existing build leaves onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.build import device_transports
from edgekit.cli.render import console, debug_lines


@cli.command(context_settings=CONTEXT)
@click.argument("build", type=click.Path(path_type=Path))
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME", help="Read the artifact's layers on this device (default: this host).")
@click.option("--model", type=click.Path(path_type=Path), help="The source model, if it moved since the build.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device.")
@click.option("--json", "as_json", is_flag=True, help="Print only the updated report JSON.")
def locate(build: Path, devices: tuple[str, ...], model: Path | None, keep_remote: bool, as_json: bool) -> None:
    """Measure every layer of an existing build (BUILD: its output folder or report) against onnxruntime, on the
    samples it was verified with, and name the first one below the tolerance. Updates the report and report.html.

    Exit codes as for 'build'; 0 once the layers were measured, whatever they show.
    """
    from edgekit.debug.existing import locate_build
    from edgekit.report import report_to_dict

    transports, _ = device_transports(devices, keep_remote)
    report = locate_build(build, transports, model)
    data = report_to_dict(report)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    out = console(stderr=False)
    for line in debug_lines(data) or ["locate       nothing to report"]:
        out.print(line, soft_wrap=True)
    located = data["verification"].get("locate") or {}
    out.print(f"layers       {located.get('compared_tensors', 0)} compared, {located.get('unmapped_tensors', 0)} ONNX tensors not mapped "
              f"({located.get('method')}, {located.get('seconds', 0):.1f} s)")
    out.print(f"report       {report.report_path}")
