"""`edgekit cache info` and `edgekit cache clear`."""

from __future__ import annotations

import json

import click

from edgekit.cli.app import CONTEXT, cli


@cli.group(context_settings=CONTEXT)
def cache() -> None:
    """Manage the build cache ($EDGEKIT_CACHE_DIR, default ~/.cache/edgekit/builds)."""


@cache.command("info", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_info(as_json: bool) -> None:
    """Where the cache is, how big, and what it holds (least recently used first)."""
    from edgekit import cache as build_cache

    found = build_cache.entries()
    info = {"path": str(build_cache.cache_dir()), "entries": len(found), "bytes": sum(e.bytes for e in found),
            "max_bytes": build_cache.max_bytes(),
            "items": [{"key": e.key, "bytes": e.bytes, **e.summary} for e in found]}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['path']}: {info['entries']} entries, {info['bytes'] / 1024**2:.1f} MiB of {info['max_bytes'] / 1024**2:.0f} MiB")
    for item in info["items"]:
        click.echo(f"  {item['key'][:12]}  {item.get('model', '?'):<28} {item.get('target', '?'):<14} {item.get('precision', '?'):<8} {item['bytes'] / 1024:8.1f} KiB")


@cache.command("clear", context_settings=CONTEXT)
def cache_clear() -> None:
    """Remove every cached build."""
    from edgekit import cache as build_cache

    click.echo(f"removed {build_cache.clear()} cached build(s) from {build_cache.cache_dir()}")
