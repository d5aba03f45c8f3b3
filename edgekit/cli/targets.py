"""`edgekit targets` and `edgekit targets show NAME`."""

from __future__ import annotations

import json

import click

from edgekit.cli.app import CONTEXT, cli


@cli.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def targets(ctx: click.Context, as_json: bool) -> None:
    """List target profiles (one line each). 'edgekit targets show NAME' prints one resolved."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.backends import registered
    from edgekit.profiles import available_profiles

    profiles = available_profiles()
    if as_json:
        click.echo(json.dumps({name: p.to_dict() for name, p in profiles.items()}, indent=2))
        return
    available = set(registered())
    for name, profile in profiles.items():
        state = "" if profile.backend in available else "  [not available yet]"
        aliases = f" (aliases: {', '.join(profile.aliases)})" if profile.aliases else ""
        click.echo(f"{name:<18} {profile.backend:<9} {profile.default_precision:<7} {profile.description}{aliases}{state}")


@targets.command("show", context_settings=CONTEXT)
@click.argument("name")
def targets_show(name: str) -> None:
    """Print the resolved profile NAME (or a path to a .toml) as JSON, defaults filled in."""
    from edgekit.profiles import resolve_target

    click.echo(json.dumps(resolve_target(name).to_dict(), indent=2))
