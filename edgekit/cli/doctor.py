"""`edgekit doctor`: what this host can do."""

from __future__ import annotations

import json
import sys

import click

from edgekit import __version__
from edgekit.cli.app import CONTEXT, cli


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """What this host can do: each backend's tools, and the runtimes the device runner finds here."""
    from edgekit.backends import get_backend, registered
    from edgekit.errors import EdgekitError
    from edgekit.transport.local import LocalTransport
    from edgekit.verify import probe

    backends = {}
    for name in registered():
        try:
            backend = get_backend(name)
            backends[name] = {"ok": True, "tools": backend.check_tools(), "extra": backend.extra}
        except EdgekitError as exc:
            backends[name] = {"ok": False, "problem": exc.message, "hint": exc.hint}
    try:
        host = probe(LocalTransport())
    except EdgekitError as exc:
        host = {"error": exc.message}
    from edgekit.cli.emulator import emulator_line
    from edgekit.emulator import SPECS, status

    info = {"edgekit": __version__, "python": sys.version.split()[0], "backends": backends, "host_runtimes": host.get("runtimes", {}), "host": host,
            "emulators": {arch: status(arch) for arch in SPECS}}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"edgekit {__version__} on Python {info['python']}")
    for name, state in backends.items():
        if state["ok"]:
            click.echo(f"  backend {name:<9} ok       " + ", ".join(f"{k} {v}" for k, v in state["tools"].items()))
        else:
            click.echo(f"  backend {name:<9} MISSING  {state['problem']} ({state.get('hint') or ''})")
    for runtime, version in info["host_runtimes"].items():
        click.echo(f"  runtime {runtime:<16} {version or '-'}")
    for arch, state in info["emulators"].items():
        click.echo(emulator_line(arch, state))
