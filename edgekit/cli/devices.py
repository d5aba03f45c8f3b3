"""`edgekit devices`, `devices check NAME`, `devices trust NAME`."""

from __future__ import annotations

import json

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.render import print_probe


@cli.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def devices(ctx: click.Context, as_json: bool) -> None:
    """List devices from devices.toml ($EDGEKIT_DEVICES, ./devices.toml, ~/.config/edgekit/devices.toml)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.devices import load_book

    book = load_book()
    if as_json:
        click.echo(json.dumps({"source": str(book.source) if book.source else None, "groups": book.groups,
                               "devices": {n: d.to_dict() for n, d in book.devices.items()}}, indent=2))
        return
    if not book.devices:
        click.echo("no devices.toml found; see docs/devices.md (ad hoc: --device user@host[:port])")
        return
    click.echo(f"from {book.source}:")
    for name, device in book.devices.items():
        where = f"{device.user + '@' if device.user else ''}{device.host}{':' + str(device.port) if device.port else ''}"
        if device.emulator:
            where = f"emulated {device.emulator}" + (f" ({device.cpu})" if device.cpu else "")
        click.echo(f"  {name:<16} {where:<32} target={device.target or '-':<14} python={device.python}")
    for group, members in book.groups.items():
        click.echo(f"  group {group}: {', '.join(members)}")


@devices.command("check", context_settings=CONTEXT)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def devices_check(name: str, as_json: bool) -> None:
    """Connect to NAME and report what it has: OS, arch, python, runtimes, free disk."""
    from edgekit.devices import resolve_devices
    from edgekit.transport import transport_for
    from edgekit.verify import probe

    results = {}
    for device in resolve_devices([name]):
        transport = transport_for(device)
        results[device.name] = probe(transport, device.work_dir if transport.where == "device" else ".", timeout=device.run_timeout)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for device_name, found in results.items():
        print_probe(device_name, found)


@devices.command("trust", context_settings=CONTEXT)
@click.argument("name")
@click.option("--yes", is_flag=True, help="Trust without asking (only after checking the fingerprint another way).")
def devices_trust(name: str, yes: bool) -> None:
    """Show NAME's host key fingerprint and, once confirmed, add it to known_hosts."""
    from edgekit.devices import resolve_devices
    from edgekit.transport.ssh import trust_host

    for device in resolve_devices([name]):
        fingerprint, path = trust_host(device, yes, lambda question: click.confirm(question, default=False))
        click.echo(f"trusted {device.name}: {fingerprint} added to {path}")
