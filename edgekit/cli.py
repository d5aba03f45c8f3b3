"""The edgekit command line. Errors print in one or two lines (no traceback unless --debug) and
map to documented exit codes (README, "Exit codes")."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EXIT_INTERRUPTED, EdgekitError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


class EdgekitGroup(click.Group):
    """Turns EdgekitError into a short message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            from rich.markup import escape

            console = _console()
            console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
            if exc.hint:
                console.print(f"[yellow]hint:[/] {escape(exc.hint)}", soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _console().print("[red]interrupted[/]; nothing half-written was left in the output folder")
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


# --- build ---------------------------------------------------------------------------------


class RichProgress:
    """Stage-by-stage progress on stderr: a spinner while a stage runs, a line when it ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = _console()
        self.status = None

    def stage_started(self, name: str, description: str) -> None:
        if self.quiet:
            return
        self._stop()
        self.status = self.console.status(f"[bold]{name}[/]: {description}...")
        self.status.start()

    def stage_finished(self, record) -> None:
        if self.quiet:
            return
        self._stop()
        tool = f" [dim]({record.tool}{' ' + record.tool_version if record.tool_version else ''})[/]" if record.tool else ""
        status = record.detail.get("status")
        mark = {"failed": "[red]✗[/]", "skipped": "[yellow]-[/]"}.get(status, "[green]✓[/]")
        self.console.print(f"{mark} {record.name:<9} {record.seconds:7.2f} s{tool}")

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  [dim]{text}[/]")

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def close(self) -> None:
        self._stop()


def _parse_shapes(values: tuple[str, ...]) -> tuple[dict[str, tuple[int, ...]], dict]:
    """Fixed shapes, and NAME=MIN:OPT:MAX ranges (TensorRT optimization profiles; NAME is fixed to OPT)."""
    from edgekit.backends.tensorrt import parse_input_shapes

    return parse_input_shapes(values)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def print_summary(report_dict: dict[str, Any], report_path: Path | None) -> None:
    from rich.table import Table

    console = _console(stderr=False)
    verification = report_dict["verification"]
    table = Table(title=f"{Path(report_dict['source_model']).name} → {report_dict['target']} ({report_dict['backend']}, {report_dict['precision']})",
                  title_justify="left")
    for column in ("output", "max abs err", "mean abs err", "cosine", "SQNR dB", "result"):
        table.add_column(column, justify="right" if column not in ("output", "result") else "left")
    for output in verification["outputs"]:
        result = "[green]pass[/]" if output["passed"] else "[red]FAIL[/]"
        table.add_row(output["name"], _fmt(output["max_abs_error"]), _fmt(output["mean_abs_error"]),
                      _fmt(output["cosine"], 6), _fmt(output["sqnr_db"]), result)
    if verification["outputs"]:
        console.print(table)
    status = verification["status"]
    colour = {"passed": "green", "failed": "red", "skipped": "yellow"}[status]
    where = verification.get("device") or verification["where"]
    console.print(f"artifact     {report_dict['artifact']}  ({report_dict['artifact_bytes'] / 1024:.1f} KiB)")
    console.print(f"verification [{colour}]{status}[/] on {where}" + (f" with {verification['runtime']}" if verification.get("runtime") else ""))
    for other in report_dict.get("verifications") or []:
        if len(report_dict["verifications"]) > 1:
            other_colour = {"passed": "green", "failed": "red", "skipped": "yellow"}[other["status"]]
            p50 = (other.get("latency_ms") or {}).get("p50")
            console.print(f"  device {other.get('device')}: [{other_colour}]{other['status']}[/]" + (f", p50 {p50:.3f} ms" if p50 else "")
                          + (f" ({other['reason']})" if other.get("reason") else ""), soft_wrap=True, markup=True)
    if verification.get("reason"):
        from rich.markup import escape

        console.print(f"             {escape(verification['reason'])}", soft_wrap=True)
    latency = verification.get("latency_ms")
    if latency:
        console.print(f"latency      p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f} ms  p99 {latency['p99']:.3f} ms  ({latency['runs']} runs)")
    cached = report_dict.get("cache") or {}
    if cached.get("hit"):
        console.print(f"cache        hit ({cached['key'][:12]}): restored, nothing rebuilt; --no-cache forces a rebuild")
    if report_path:
        console.print(f"report       {report_path}")


@cli.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", "targets", multiple=True,
              help="Target profile name (see 'edgekit targets') or path to a .toml profile. Repeat to build a matrix into OUT/<target>/.")
@click.option("-p", "--precision", type=click.Choice(["fp32", "fp16", "int8", "dynamic"]), help="Numeric precision. Default: the target's. 'dynamic' = int8 weights, float activations (no calibration).")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration data: .npy, .npz, a folder of them, or a folder of images. Required for int8.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("edgekit-out"), show_default=True, help="Output folder for the artifact and edgekit-report.json.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS", help="Fix an input's shape, e.g. image=1x3x224x224. Repeatable. TensorRT targets also take a range NAME=MIN:OPT:MAX (verified at OPT).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim/onnxslim.")
@click.option("--no-verify", is_flag=True, help="Skip verification (the report says 'skipped').")
@click.option("--samples", type=click.IntRange(1, 1000), default=8, show_default=True, help="Verification samples (taken from --calib when given, else seeded random).")
@click.option("--runs", type=click.IntRange(1, 100000), help="Timed latency runs. Default: the target's.")
@click.option("--warmup", type=click.IntRange(0, 10000), help="Warm-up runs before timing. Default: the target's.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random verification inputs.")
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME",
              help="Verify on a device (devices.toml name, group, ~/.ssh/config alias, or user@host[:port]). Repeatable; runs concurrently.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device (for debugging).")
@click.option("--keep-work", is_flag=True, help="Keep intermediate files (onnx2tf output, logs).")
@click.option("--no-cache", is_flag=True, help="Rebuild even if an identical build is cached (the cache entry is refreshed).")
@click.option("--json", "as_json", is_flag=True, help="Print only the report JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def build(model: Path, targets: tuple[str, ...], precision: str | None, calib: Path | None, out_dir: Path, input_shapes: tuple[str, ...],
          no_simplify: bool, no_verify: bool, samples: int, runs: int | None, warmup: int | None, seed: int,
          devices: tuple[str, ...], keep_remote: bool, keep_work: bool, no_cache: bool, as_json: bool, quiet: bool) -> None:
    """Build MODEL for a target, verify it against onnxruntime, and write a report.

    Exit codes: 0 built and verified; 1 verification failed (artifact and report kept);
    3 bad input; 4 a tool failed; 5 a needed extra is not installed; 6 device error.
    """
    from edgekit.pipeline import build as run_build
    from edgekit.report import report_to_dict
    from edgekit.types import BuildOptions

    options = BuildOptions(simplify=not no_simplify, verify=not no_verify, max_samples=samples,
                           latency_runs=runs, warmup_runs=warmup, seed=seed, use_cache=not no_cache)
    shapes, options.input_shape_ranges = _parse_shapes(input_shapes)
    transports, device_list = _device_transports(devices, keep_remote)
    targets = _target_for(targets, device_list)
    if len(targets) > 1:
        if transports:
            raise click.UsageError("--device verifies one target's artifact; build a matrix without --device, or one target per command")
        _build_matrix(model, list(targets), out_dir, as_json, quiet, precision=precision, calib=calib,
                      input_shapes=shapes, options=options, keep_work=keep_work)
        return
    progress = RichProgress(quiet=quiet or as_json and not sys.stderr.isatty())
    try:
        report = run_build(model, targets[0], precision=precision, calib=calib, out_dir=out_dir, transports=transports,
                           input_shapes=shapes, options=options, progress=progress, keep_work=keep_work)
    finally:
        progress.close()
    data = report_to_dict(report)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not quiet:
        print_summary(data, report.report_path)
    if report.verification.status == "failed":
        sys.exit(1)


def _device_transports(specs: tuple[str, ...], keep_remote: bool) -> tuple[list, list]:
    """SSH transports for --device values (names, groups, aliases, user@host), and the devices."""
    if not specs:
        return [], []
    from edgekit.devices import resolve_devices
    from edgekit.transport.ssh import SSHTransport

    devices = resolve_devices(list(specs))
    return [SSHTransport(d, keep_remote=keep_remote) for d in devices], devices


def _target_for(targets: tuple[str, ...], devices: list) -> tuple[str, ...]:
    """--target as given, or the one target the devices name in devices.toml."""
    if targets:
        return targets
    named = {d.target for d in devices}
    if not devices:
        raise click.UsageError("Missing option '-t' / '--target' (or give --device with a target in devices.toml)")
    if len(named) != 1 or None in named:
        raise click.UsageError("give --target: the devices do not name one common target in devices.toml")
    return (named.pop(),)


class PrefixedProgress:
    """One line per finished stage, prefixed with the target; safe with builds in parallel."""

    def __init__(self, target: str, quiet: bool) -> None:
        self.target, self.quiet, self.console = target, quiet, _console()

    def stage_started(self, name: str, description: str) -> None:
        pass

    def stage_finished(self, record) -> None:
        if not self.quiet:
            self.console.print(f"[cyan]{self.target:<14}[/] {record.name:<9} {record.seconds:7.2f} s")

    def message(self, text: str) -> None:
        pass


def _build_matrix(model: Path, targets: list[str], out_dir: Path, as_json: bool, quiet: bool, **kwargs: Any) -> None:
    import dataclasses

    from rich.table import Table

    from edgekit.matrix import build_matrix, exit_code
    from edgekit.report import report_to_dict

    def progress_for(target: str) -> PrefixedProgress:
        return PrefixedProgress(target, quiet or as_json)

    # each build gets its own options object: the pipeline fills in per-build fields
    options = kwargs.pop("options")
    results = build_matrix(model, targets, out_dir, progress_for=progress_for, **kwargs,
                           options_factory=lambda: dataclasses.replace(options))
    if as_json:
        click.echo(json.dumps([report_to_dict(r.report) if r.report else {"target": r.target, **r.row()} for r in results], indent=2))
    elif not quiet:
        table = Table(title=f"{model.name}: {len(targets)} targets", title_justify="left")
        for column in ("target", "backend", "precision", "size KiB", "p50 ms", "min SQNR dB", "min cosine", "verification"):
            table.add_column(column, justify="right" if column in ("size KiB", "p50 ms", "min SQNR dB", "min cosine") else "left")
        for result in results:
            row = result.row()
            if "error" in row:
                table.add_row(row["target"], "", "", "", "", "", "", f"[red]error {row['exit_code']}[/]")
                continue
            colour = {"passed": "green", "failed": "red", "skipped": "yellow"}[row["status"]]
            table.add_row(row["target"], row["backend"], row["precision"], f"{row['artifact_bytes'] / 1024:.1f}",
                          _fmt(row["latency_p50_ms"]) if row["latency_p50_ms"] is not None else "-",
                          _fmt(row["min_sqnr_db"]) if row["min_sqnr_db"] is not None else "-",
                          _fmt(row["min_cosine"], 6) if row["min_cosine"] is not None else "-",
                          f"[{colour}]{row['status']}[/]" + (" (cached)" if row["cache_hit"] else ""))
        _console(stderr=False).print(table)
    for result in results:
        if result.error is not None:
            from rich.markup import escape

            _console().print(f"[bold red]error[/] ({result.target}): {escape(str(result.error))}", soft_wrap=True)
    sys.exit(exit_code(results))


# --- targets -------------------------------------------------------------------------------


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


# --- inspect -------------------------------------------------------------------------------


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
        return
    from rich.table import Table

    console = _console(stderr=False)
    console.print(f"[bold]{info['path']}[/]  opset {info['opset']}  {info['bytes'] / 1024:.1f} KiB  {info['parameters']:,} parameters  {info['nodes']} nodes")
    io_table = Table("", "name", "shape", "dtype", title="tensors", title_justify="left")
    for kind in ("inputs", "outputs"):
        for tensor in info[kind]:
            io_table.add_row(kind[:-1], tensor["name"], str(tensor["shape"]), tensor["dtype"])
    console.print(io_table)
    ops = Table("op", "count", title="ops", title_justify="left")
    for op, count in info["ops"].items():
        ops.add_row(op, str(count))
    console.print(ops)
    if target:
        blocking = info["unsupported"]
        if blocking:
            console.print(f"[red]ops the {info['backend']} backend ({info['target']}) cannot take:[/]")
            for line in blocking:
                console.print(f"  {line}")
        elif info.get("backend_note"):
            console.print(f"[yellow]{info['backend_note']}[/]")
        else:
            console.print(f"[green]no ops known to block the {info['backend']} backend ({info['target']})[/]")


# --- verify and devices ---------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("build", type=click.Path(path_type=Path))
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME", help="Device(s) to verify on (default: this host). Repeatable.")
@click.option("--model", type=click.Path(path_type=Path), help="The source model, if it moved since the build.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device.")
@click.option("--json", "as_json", is_flag=True, help="Print only the updated report JSON.")
def verify(build: Path, devices: tuple[str, ...], model: Path | None, keep_remote: bool, as_json: bool) -> None:
    """Verify an existing build again: BUILD is its output folder, report, or artifact.

    The artifact's sha256 is checked against the report first. Exit codes as for 'build'.
    """
    from edgekit.report import report_to_dict
    from edgekit.reverify import reverify

    transports, _ = _device_transports(devices, keep_remote)
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
        click.echo(f"  {name:<16} {where:<32} target={device.target or '-':<14} python={device.python}")
    for group, members in book.groups.items():
        click.echo(f"  group {group}: {', '.join(members)}")


@devices.command("check", context_settings=CONTEXT)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def devices_check(name: str, as_json: bool) -> None:
    """Connect to NAME and report what it has: OS, arch, python, runtimes, free disk."""
    from edgekit.devices import resolve_devices
    from edgekit.transport.ssh import SSHTransport
    from edgekit.verify import RUNNER_NAME, RUNNER_SCRIPT

    results = {}
    for device in resolve_devices([name]):
        with SSHTransport(device) as transport:
            transport.upload(RUNNER_SCRIPT, RUNNER_NAME)
            result = transport.run_python(RUNNER_NAME, ["probe", "--path", device.work_dir], timeout=device.connect_timeout + 120)
            if result.exit_code != 0:
                from edgekit.errors import DeviceError

                raise DeviceError(f"device '{device.name}': the probe failed: {result.stderr.strip()[-800:]}")
            results[device.name] = json.loads(result.stdout.strip().splitlines()[-1])
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for device_name, probe in results.items():
        click.echo(f"{device_name}: {probe['system']} {probe['release']} {probe['machine']}, Python {probe['python']}, numpy {probe.get('numpy') or 'MISSING'}")
        free = probe.get("free_disk_bytes")
        click.echo(f"  free disk in work_dir: {free / 1024**3:.1f} GiB" if free is not None else "  free disk: unknown")
        for runtime, version in probe["runtimes"].items():
            click.echo(f"  {runtime:<16} {version or '-'}")
        if probe.get("trtexec"):
            click.echo(f"  trtexec          {probe['trtexec']}")


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


# --- doctor --------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """What this host can do: each backend's tools, and the runtimes the device runner finds here."""
    import subprocess

    from edgekit.backends import get_backend, registered
    from edgekit.errors import EdgekitError
    from edgekit.verify import RUNNER_SCRIPT

    backends = {}
    for name in registered():
        try:
            backend = get_backend(name)
            backends[name] = {"ok": True, "tools": backend.check_tools(), "extra": backend.extra}
        except EdgekitError as exc:
            backends[name] = {"ok": False, "problem": exc.message, "hint": exc.hint}
    probe = subprocess.run([sys.executable, str(RUNNER_SCRIPT), "probe"], capture_output=True, text=True, timeout=300)
    host = json.loads(probe.stdout) if probe.returncode == 0 else {"error": probe.stderr[-500:]}
    info = {"edgekit": __version__, "python": sys.version.split()[0], "backends": backends, "host_runtimes": host.get("runtimes", {}), "host": host}
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


# --- cache ---------------------------------------------------------------------------------


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


def main() -> None:
    cli(prog_name="edgekit")


if __name__ == "__main__":
    main()
