"""`edgekit build`: one target (with optional device verification) or a matrix of targets."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from edgekit.cli.app import CONTEXT, cli
from edgekit.cli.render import PrefixedProgress, RichProgress, print_matrix, print_matrix_errors, print_summary
from edgekit.errors import DeviceError
from edgekit.types import PRECISIONS


@cli.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", "targets", multiple=True,
              help="Target profile name (see 'edgekit targets') or path to a .toml profile. Repeat to build a matrix into OUT/<target>/.")
@click.option("-p", "--precision", type=click.Choice(PRECISIONS), help="Numeric precision. Default: the target's. 'dynamic' = int8 weights, float activations (no calibration).")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration data: .npy, .npz, a folder of them, or a folder of images. Required for int8.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("edgekit-out"), show_default=True, help="Output folder for the artifact and edgekit-report.json.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS", help="Fix an input's shape, e.g. image=1x3x224x224. Repeatable. TensorRT targets also take a range NAME=MIN:OPT:MAX (verified at OPT).")
@click.option("--verify-data", type=click.Path(path_type=Path), help="Verification samples apart from --calib (same formats). Without it, int8 holds out the last 20% of --calib.")
@click.option("--fix-input", "fix_inputs", multiple=True, metavar="NAME=VALUE",
              help="Freeze an input to a constant before simplification (e.g. sr=16000; a list 1,0,1; or @values.npy). Repeatable.")
@click.option("--dequantize", is_flag=True, help="Rewrite onnxruntime-only quantized ops (ConvInteger, MatMulInteger, DynamicQuantizeLSTM, ...) to float instead of refusing the model.")
@click.option("--check", "checks", multiple=True, metavar="OUTPUT=top1:MIN",
              help="Gate verification on top-1/top-5 agreement of a class-score output, e.g. logits=top1:0.99. Repeatable.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim/onnxslim.")
@click.option("--no-verify", is_flag=True, help="Skip verification (the report says 'skipped').")
@click.option("--samples", type=click.IntRange(1, 1000), default=8, show_default=True, help="Verification samples (taken from --calib when given, else seeded random).")
@click.option("--runs", type=click.IntRange(1, 100000), help="Timed latency runs. Default: the target's.")
@click.option("--warmup", type=click.IntRange(0, 10000), help="Warm-up runs before timing. Default: the target's.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random verification inputs.")
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME",
              help="Verify on a device (devices.toml name, group, ~/.ssh/config alias, or user@host[:port]), an emulated one (emu:aarch64[:CPU]) "
                   "or this host (host). Repeatable; runs concurrently, results side by side.")
@click.option("--keep-remote", is_flag=True, help="Keep the per-run folder on the device (for debugging).")
@click.option("--keep-work", is_flag=True, help="Keep intermediate files (onnx2tf output, logs).")
@click.option("--no-cache", is_flag=True, help="Rebuild even if an identical build is cached (the cache entry is refreshed).")
@click.option("--allow-foreign-gpu", is_flag=True, help="TensorRT: build on this host even if its GPU is not the one the target names (the report names both).")
@click.option("--locate", is_flag=True, help="Measure every layer against onnxruntime and name the first divergent one, even if verification passes (done anyway when it fails).")
@click.option("--fallback", type=click.Choice(["auto", "none"]), help="When verification fails, keep the most sensitive layers in float until it passes. Default: the target's ([fallback] precisions).")
@click.option("--fallback-budget", type=click.FloatRange(0.0, 1.0), metavar="FRACTION", help="The share of the model's parameters fallback may keep in float. Default: the target's (0.25).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow model files that run code when loaded (a pickled torch module, a Keras Lambda layer). Only for files you trust like a program.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML: one testcase per device x output (for CI test reports).")
@click.option("--json", "as_json", is_flag=True, help="Print only the report JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def build(model: Path, targets: tuple[str, ...], precision: str | None, calib: Path | None, out_dir: Path, input_shapes: tuple[str, ...],
          verify_data: Path | None, fix_inputs: tuple[str, ...], dequantize: bool, checks: tuple[str, ...],
          no_simplify: bool, no_verify: bool, samples: int, runs: int | None, warmup: int | None, seed: int,
          devices: tuple[str, ...], keep_remote: bool, keep_work: bool, no_cache: bool, allow_foreign_gpu: bool, locate: bool,
          fallback: str | None, fallback_budget: float | None, trust_pickle: bool, junit_path: Path | None, as_json: bool, quiet: bool) -> None:
    """Build MODEL for a target, verify it against onnxruntime, and write a report.

    MODEL is an ONNX file, or a PyTorch (.pt2, .pt, .ts) or TensorFlow (SavedModel folder, .keras, .h5) model that is
    exported to ONNX first and checked against the source (the 'export' stage).

    Exit codes: 0 built and verified; 1 verification failed (artifact and report kept);
    3 bad input; 4 a tool failed; 5 a needed extra is not installed; 6 device error (7 unreachable,
    8 authentication refused, 9 connection lost, 10 stalled, 11 a file arrived corrupted twice).
    """
    from edgekit.fix_inputs import parse_fix_input
    from edgekit.metrics import parse_check
    from edgekit.modelio import parse_input_shapes
    from edgekit.pipeline import build as run_build
    from edgekit.types import BuildOptions

    options = BuildOptions(simplify=not no_simplify, verify=not no_verify, max_samples=samples,
                           latency_runs=runs, warmup_runs=warmup, seed=seed, use_cache=not no_cache, allow_foreign_gpu=allow_foreign_gpu,
                           verify_data=verify_data, fix_inputs=dict(parse_fix_input(text) for text in fix_inputs), dequantize=dequantize,
                           locate=locate, fallback=fallback, fallback_budget=fallback_budget)
    for name, metric, minimum in (parse_check(text) for text in checks):
        options.checks.setdefault(name, {})[metric] = minimum
    shapes, options.input_shape_ranges = parse_input_shapes(input_shapes)
    transports, device_list = device_transports(devices, keep_remote)
    targets = _target_for(targets, device_list)
    if len(targets) > 1:
        if any(not (d.is_host or d.emulator) for d in device_list):
            raise click.UsageError("a matrix verifies on this host and emulators only (--device host, emu:ARCH); build one target per command for SSH devices")
        _build_matrix(model, list(targets), out_dir, as_json, quiet, junit_path, precision=precision, calib=calib,
                      input_shapes=shapes, options=options, keep_work=keep_work, trust_pickle=trust_pickle,
                      transports_factory=(lambda: device_transports(devices, keep_remote)[0]) if devices else None)
        return
    progress = RichProgress(quiet=quiet or as_json and not sys.stderr.isatty())
    try:
        with junit_on_exit(junit_path, out_dir, targets[0]):
            report = run_build(model, targets[0], precision=precision, calib=calib, out_dir=out_dir, transports=transports,
                               input_shapes=shapes, options=options, progress=progress, keep_work=keep_work, trust_pickle=trust_pickle)
    except DeviceError as exc:  # the build is fine, devices failed: show its report, then the error
        progress.close()
        if exc.report is not None:
            show_report(exc.report, as_json, quiet)
        raise
    finally:
        progress.close()
    show_report(report, as_json, quiet)
    if report.verification.status == "failed":
        sys.exit(1)


def show_report(report: Any, as_json: bool, quiet: bool) -> None:
    """The report as JSON (--json), or its summary for people (unless --quiet)."""
    from edgekit.report import report_to_dict

    data = report_to_dict(report)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not quiet:
        print_summary(data, report.report_path)


@contextlib.contextmanager
def junit_on_exit(path: Path | None, out_dir: Path, target: str, what: str = "build") -> Iterator[None]:
    """Write JUnit XML for the build/verification in the block, also when it stops with an edgekit error."""
    if path is None:
        yield
        return
    from edgekit import junit
    from edgekit.errors import EdgekitError

    try:
        yield
    except EdgekitError as exc:
        junit.write(path, junit.build_suites(out_dir, target, exc, what))
        raise
    junit.write(path, junit.build_suites(out_dir, target, None, what))


def device_transports(specs: tuple[str, ...], keep_remote: bool) -> tuple[list, list]:
    """Transports for --device values (names, groups, aliases, user@host, host, emu:ARCH), and the devices."""
    if not specs:
        return [], []
    from edgekit.devices import resolve_devices
    from edgekit.transport import transport_for

    devices = resolve_devices(list(specs))
    return [transport_for(d, keep_remote) for d in devices], devices


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


def _build_matrix(model: Path, targets: list[str], out_dir: Path, as_json: bool, quiet: bool, junit_path: Path | None, **kwargs: Any) -> None:
    from edgekit.matrix import build_matrix, exit_code
    from edgekit.report import report_to_dict

    # each build gets its own options object: the pipeline fills in per-build fields
    options = kwargs.pop("options")
    results = build_matrix(model, targets, out_dir, progress_for=lambda target: PrefixedProgress(target, quiet or as_json), **kwargs,
                           options_factory=lambda: dataclasses.replace(options))
    if as_json:
        click.echo(json.dumps([report_to_dict(r.report) if r.report else {"target": r.target, **r.row()} for r in results], indent=2))
    elif not quiet:
        print_matrix(model, results)
    print_matrix_errors(results)
    if junit_path is not None:
        from edgekit import junit

        junit.write(junit_path, [suite for r in results for suite in junit.build_suites(r.out_dir, r.target, r.error)])
    sys.exit(exit_code(results))
