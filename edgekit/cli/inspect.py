"""`edgekit inspect MODEL [--target T]`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.render import print_inspection


@cli.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", help="Also list the ops this target's backend is known not to support.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model: Path, target: str | None, as_json: bool) -> None:
    """Describe MODEL: inputs/outputs, opset, op histogram, parameters, size, blocking ops."""
    from edgekit.inspect import inspect_model

    info = inspect_model(model, target)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        print_inspection(info, target)
