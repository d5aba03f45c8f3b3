"""`edgekit emulator ...`: set up and inspect the emulated ARM devices (`--device emu:aarch64`)."""

from __future__ import annotations

import json
import shutil

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.emulator import SPECS


@cli.group(context_settings=CONTEXT)
def emulator() -> None:
    """Emulated ARM devices: verify on ARM kernels without a board (docs/emulator.md)."""


@emulator.command("setup", context_settings=CONTEXT)
@click.argument("arch", type=click.Choice(sorted(SPECS)), default="aarch64")
@click.option("--force", is_flag=True, help="Build it again even if a finished one exists (replaced only once the new one works).")
@click.option("--mirror", metavar="URL", help="Debian archive to download from (default https://deb.debian.org/debian), e.g. a snapshot.debian.org URL.")
@click.option("--security-mirror", metavar="URL", help="Debian security archive (default https://deb.debian.org/debian-security).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the final line.")
def emulator_setup(arch: str, force: bool, mirror: str | None, security_mirror: str | None, quiet: bool) -> None:
    """Download and build the ARCH emulator's sysroot (a Debian Python, numpy, ncnn, LiteRT).

    This is the one edgekit command that downloads: the pinned Debian packages and wheels listed
    in edgekit/emulator/ARCH.lock.json, each checked by sha256. A finished setup is reused.
    """
    from edgekit.cli.render import console as make_console
    from edgekit.emulator import emulator_root
    from edgekit.emulator.sysroot import setup

    console = make_console()
    mirrors = {k: v for k, v in (("debian", mirror), ("debian-security", security_mirror)) if v}
    if not quiet:
        console.print(f"[bold]edgekit emulator setup {arch}[/]: into {emulator_root() / arch}")

    def log(text: str) -> None:
        if not quiet:
            console.print(f"  {text}", style="dim", soft_wrap=True, markup=False)

    found, built = setup(arch, force=force, mirrors=mirrors, log=log)
    manifest = found.manifest
    state = f"built in {manifest.get('setup_seconds')} s" if built else "already set up (reused; --force rebuilds)"
    runtimes = ", ".join(f"{k} {v}" for k, v in manifest.get("runtimes", {}).items())
    click.echo(f"emulator {arch}: {state}; Python {manifest['python']['version']}, numpy {manifest.get('numpy')}, {runtimes}; "
               f"{manifest.get('sysroot_bytes', 0) / 1024**2:.0f} MiB in {found.root}")


@emulator.command("info", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def emulator_info(as_json: bool) -> None:
    """Which emulators are set up, where, with what, and which CPU models qemu offers."""
    from edgekit.emulator import emulator_root, status

    info = {"path": str(emulator_root()), "emulators": {arch: status(arch) for arch in SPECS}}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"emulators in {info['path']} ($EDGEKIT_EMULATOR_DIR)")
    for arch, state in info["emulators"].items():
        click.echo(emulator_line(arch, state))
        if state.get("ready"):
            click.echo(f"  use: --device emu:{arch} (CPU from the target profile, default {state['default_cpu']}) or emu:{arch}:CPU")
        if state.get("cpu_models"):
            click.echo(f"  qemu {state['qemu_version']} CPU models: {', '.join(state['cpu_models'])}")


def emulator_line(arch: str, state: dict) -> str:
    """One line per emulator, for `emulator info` and `doctor`."""
    if state.get("ready"):
        runtimes = ", ".join(f"{k} {v}" for k, v in state.get("runtimes", {}).items())
        return (f"  emulator {arch:<8} ready    Python {state['python']}, {runtimes}; qemu {state['qemu_version']}; "
                f"{(state.get('bytes') or 0) / 1024**2:.0f} MiB, set up {state.get('created_at')}")
    return f"  emulator {arch:<8} MISSING  {state.get('problem')}"


@emulator.command("remove", context_settings=CONTEXT)
@click.argument("arch", type=click.Choice(sorted(SPECS)), default="aarch64")
def emulator_remove(arch: str) -> None:
    """Delete the ARCH emulator's sysroot."""
    from edgekit.emulator import emulator_root

    folder = emulator_root() / arch
    if not folder.exists():
        click.echo(f"nothing to remove: {folder} does not exist")
        return
    shutil.rmtree(folder)
    click.echo(f"removed {folder}")
