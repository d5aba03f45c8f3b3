"""The root command group. Errors print in one or two lines (no traceback unless --debug) and map to the
documented exit codes (README, "Exit codes")."""

from __future__ import annotations

from typing import Any

import click

from edgekit import __version__
from edgekit.cli.render import console, print_error
from edgekit.errors import EXIT_INTERRUPTED, EdgekitError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class EdgekitGroup(click.Group):
    """Turns EdgekitError into a short message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            print_error(exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            console().print("[red]interrupted[/]; nothing half-written was left in the output folder")
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=EdgekitGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """edgekit: take an ONNX model to a verified, measured artifact for an edge device.

    \b
    Typical use:
      edgekit build model.onnx --target android --precision fp16
      edgekit build model.onnx --target android --precision int8 --calib data/
      edgekit inspect model.onnx --target android
      edgekit targets
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
