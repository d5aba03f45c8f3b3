"""The build pipeline: load & check -> simplify -> convert/quantize -> verify -> report.

Each stage is a small function; this module only sequences them, times them, names the stage
that failed (with the ones that had finished), and publishes the outputs (:mod:`edgekit.publish`: staged,
then renamed into place so that no reader sees two builds mixed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekit import __version__, cache, export
from edgekit._lazy import version_of
from edgekit.backends import Backend, BuildHost, ConvertContext, get_backend
from edgekit.build_outputs import cache_key, ensure_dir, publish_build, restore, store, write_report  # noqa: F401  (write_report: the API)
from edgekit.calibration import SampleSet
from edgekit.debug.session import DebugRequest, debug_build, fallback_mode
from edgekit.errors import CalibrationError, EdgekitError, OptionsError, StageError, ToolError
from edgekit.fsutil import copy_item, remove_item, sha256_tree, size_of, sweep_stale, temp_folder
from edgekit.modelio import save_model
from edgekit.names import sanitize, user_names_in, user_node_ids
from edgekit.prepare import prepare, refuse_blocking
from edgekit.profiles import TargetProfile, resolve_target
from edgekit.simplify import simplify as run_simplify
from edgekit.transport.base import Transport
from edgekit.transport.local import LocalTransport
from edgekit.types import PRECISIONS, Artifact, BuildOptions, BuildReport, StageRecord, VerificationResult
from edgekit.verify import verify_everywhere

STAGING = "publish"  # inside the work folder: the build's files before they are published


class Progress(Protocol):
    def stage_started(self, name: str, description: str) -> None: ...
    def stage_finished(self, record: StageRecord) -> None: ...
    def message(self, text: str) -> None: ...


class SilentProgress:
    def stage_started(self, name: str, description: str) -> None:
        pass

    def stage_finished(self, record: StageRecord) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class _Run:
    """State of one build while it runs."""

    progress: Progress
    stages: list[StageRecord] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str, description: str) -> Iterator[None]:
        self.progress.stage_started(name, description)
        try:
            yield
        except ToolError as exc:
            if not isinstance(exc, StageError):
                exc = StageError(f"{name}: {exc.message}", hint=exc.hint)
            done = ", ".join(s.name for s in self.stages) or "none"
            exc.message = f"{exc.message}\n  (stage '{name}' failed; stages finished before it: {done})"
            raise exc from None

    def add(self, record: StageRecord) -> None:
        self.stages.append(record)
        self.progress.stage_finished(record)


def resolve_precision(profile: TargetProfile, precision: str | None) -> str:
    chosen = precision or profile.default_precision
    if chosen not in PRECISIONS:
        raise OptionsError(f"unknown precision '{chosen}'", hint=f"choose one of {', '.join(PRECISIONS)}")
    if chosen not in profile.precisions:
        raise OptionsError(f"target '{profile.name}' does not offer precision '{chosen}'", hint=f"it offers {', '.join(profile.precisions)}")
    return chosen


def _require_calibration(precision: str, calib: Path | None, profile: TargetProfile, from_default: bool, backend: Backend) -> None:
    # A backend may quantize int8 without calibration (Core ML int8 weights): it says so with needs_calibration().
    if backend.needs_calibration(profile, precision) and calib is None:
        default = f" (int8 is target '{profile.name}''s default precision)" if from_default else ""
        raise CalibrationError(
            f"int8 quantization needs calibration data{default}, and edgekit never calibrates on random data",
            hint="pass --calib PATH: a .npy/.npz file, a folder of .npy/.npz files, or a folder of images "
            "(100+ representative samples); or choose --precision fp16, or --precision dynamic for int8 weights without calibration",
        )


def build(
    model: Any,
    target: str | Path | TargetProfile,
    *,
    precision: str | None = None,
    calib: str | Path | None = None,
    out_dir: str | Path = "edgekit-out",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    options: BuildOptions | None = None,
    transport: Transport | None = None,
    transports: list[Transport] | None = None,
    progress: Progress | None = None,
    keep_work: bool = False,
    verify_data: str | Path | None = None,
    fix_inputs: dict[str, Any] | None = None,
    dequantize: bool | None = None,
    checks: dict[str, dict[str, float]] | None = None,
    example_inputs: tuple | None = None,
    dynamic_shapes: Any = None,
    trust_pickle: bool = False,
) -> BuildReport:
    """Build ``model`` for ``target`` and verify it; returns the report (also written to ``out_dir``).

    ``model`` is an ONNX file, or a PyTorch/TensorFlow model that the export stage turns into ONNX first
    (edgekit.export): a ``torch.nn.Module`` with ``example_inputs`` (and optionally ``dynamic_shapes``), a
    ``.pt2``/``.pt``/``.ts`` file, a SavedModel folder, or a ``.keras``/``.h5`` file. ``trust_pickle`` allows
    formats that run code from the file when loaded (pickled modules, Keras Lambda layers).

    ``verify_data``: verification samples apart from ``calib``; ``fix_inputs``: input name -> value frozen before
    simplification (a number, a list, an array, or "@file.npy"); ``dequantize``: rewrite onnxruntime-only quantized
    ops to float instead of refusing; ``checks``: output name -> {"top1": min, "top5": min}. Each also has a field
    in ``options`` (these keywords win).

    Verification results never raise: check ``report.verification.status``. Bad input raises an
    :class:`~edgekit.errors.InputError`, a failing tool a :class:`~edgekit.errors.ToolError`.
    """
    options = options or BuildOptions()
    options.calib = Path(calib) if calib is not None else options.calib
    options.out_dir = Path(out_dir)
    options.input_shapes = dict(input_shapes or options.input_shapes)
    options.verify_data = Path(verify_data) if verify_data is not None else options.verify_data
    options.fix_inputs = {**options.fix_inputs, **(fix_inputs or {})}
    options.dequantize = options.dequantize if dequantize is None else dequantize
    options.checks = {**options.checks, **(checks or {})}
    run = _Run(progress or SilentProgress())
    profile = target if isinstance(target, TargetProfile) else resolve_target(target)
    asked = precision or options.precision
    chosen = resolve_precision(profile, asked)
    backend = get_backend(profile.backend, profile)
    _require_calibration(chosen, options.calib, profile, from_default=asked is None, backend=backend)
    if options.input_shape_ranges and not backend.supports_shape_ranges:
        raise OptionsError(f"target '{profile.name}' ({backend.name}) builds for one input shape; MIN:OPT:MAX ranges are for TensorRT targets",
                           hint="give --input-shape NAME=DIMS")
    tool_versions = backend.check_tools()
    exporting = export.settings_for(model, profile.tolerance_for("fp32"), profile.preprocessing, input_shapes=options.input_shapes,
                                    calib=options.calib, samples=options.max_samples, seed=options.seed, example_inputs=example_inputs,
                                    dynamic_shapes=dynamic_shapes, trust_pickle=trust_pickle)
    model = Path(model) if isinstance(model, (str, Path)) else model

    # --no-cache skips the lookup but still refreshes the entry with the new build. Builds verified on
    # devices never come from the cache: a device run is a measurement of the device as it is now.
    transports = list(transports or ([transport] if transport is not None else []))
    for place in transports:
        place.use_profile(profile)
    key = cache_key(model, profile, chosen, options, tool_versions, transports, backend, exporting)
    dropped = None
    if key is not None and options.use_cache and not transports:
        found = cache.lookup(key)
        if found.entry is not None:
            return restore(found, options.out_dir, run.add)
        if found.dropped:
            dropped = found.dropped
            run.progress.message(f"{dropped}; building again")

    out_dir = ensure_dir(options.out_dir)
    sweep_stale(out_dir)  # temporaries of builds killed earlier
    work_dir = temp_folder(out_dir, "work").resolve()
    try:
        report, device_error = _build(model, exporting, profile, chosen, backend, options, run, work_dir, transports)
        report.cache = store(key, report, work_dir / STAGING, replace=not options.use_cache, dropped=dropped, message=run.progress.message)
        publish_build(report, work_dir / STAGING, out_dir)
    finally:
        if keep_work:
            run.progress.message(f"work files kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    if device_error is not None:
        device_error.report = report
        raise device_error
    return report


def _build(source: Any, exporting: export.ExportSettings | None, profile: TargetProfile, precision: str, backend: Backend,
           options: BuildOptions, run: _Run, work_dir: Path, transports: list[Transport]) -> tuple[BuildReport, EdgekitError | None]:
    exported = _export(source, exporting, run, work_dir) if exporting is not None else None
    model_path = exported.onnx_path if exported else source
    started = time.perf_counter()
    with run.stage("load", "Loading and checking the model"):
        calibrates = options.calib is not None and backend.needs_calibration(profile, precision)
        shaped = dataclasses.replace(options, input_shapes={**(exported.input_shapes if exported else {}), **options.input_shapes})
        prepared = prepare(model_path, profile, precision, shaped, calibrates, lambda m: backend.blocking_ops_at(m, precision),
                           run.progress.message)
    loaded, calibration, samples, references = prepared.loaded, prepared.calibration, prepared.samples, prepared.references
    run.add(StageRecord("load", round(time.perf_counter() - started, 3), "onnx", version_of("onnx"),
                        {"opset": loaded.opset, "nodes": len(loaded.proto.graph.node), "bytes": loaded.file_bytes,
                         "ir_version": int(loaded.proto.ir_version), "ir_version_lowered_from": loaded.ir_version_lowered_from,
                         "calibration_samples": prepared.calibration_samples, "verification_samples": samples.count,
                         "opset_upgraded_from": prepared.opset_upgraded_from}))

    simplified = loaded.proto
    if options.simplify:
        with run.stage("simplify", "Simplifying the graph (onnxsim, onnxslim)"):
            result = run_simplify(loaded.proto, samples, references)
            refuse_blocking(backend.blocking_ops_at(result.model, precision), profile, model_path)
        simplified = result.model
        run.add(StageRecord("simplify", round(result.seconds, 3), result.tool, result.tool_version,
                            {"nodes_before": result.nodes_before, "nodes_after": result.nodes_after,
                             "checked_against_original": True, "attempts": result.attempts}))
    else:
        run.add(StageRecord("simplify", 0.0, None, None, {"skipped": "--no-simplify"}))

    stem = Path(export.source_name(source)).stem if exported else model_path.stem
    # converters see valid, unique names; the artifact's I/O bindings get the user's names back
    named, names = sanitize(simplified)
    model_file = save_model(named, work_dir / f"{stem}.onnx")
    build_host = BuildHost(transport=transports[0] if transports else None, out_dir=options.out_dir,
                           shape_ranges={names.tensor(k): v for k, v in options.input_shape_ranges.items()},
                           allow_foreign_gpu=options.allow_foreign_gpu)
    ctx = ConvertContext(model_path=model_file, model=named, inputs=names.specs(loaded.inputs), outputs=names.specs(loaded.outputs),
                         profile=profile, precision=precision, calibration=calibration.renamed(names.tensors) if calibration else None,
                         work_dir=work_dir, artifact_stem=f"{stem}_{precision}", options=backend.options(profile), source_path=model_path,
                         build_host=build_host, log=run.progress.message, shared_dir=work_dir,
                         fallback_budget=_fallback_budget(profile, options, precision), user_nodes=user_node_ids(simplified, named))
    with run.stage("convert", f"Converting with the {backend.name} backend ({precision})"):
        artifact = backend.convert(ctx)
    artifact.inputs, artifact.outputs = names.restore(artifact.inputs), names.restore(artifact.outputs)
    for record in ctx.stages:
        run.add(record)

    staging = work_dir / STAGING
    staging.mkdir()
    artifact = install_artifact(artifact, staging)
    verifications, device_error = _verify(artifact, backend, profile, precision, samples, references, options, run, transports)

    def verify_candidate(candidate: Artifact) -> tuple[list[VerificationResult], EdgekitError | None]:
        # a fallback round's artifact, converted from the renamed model: its bindings get the user's names back too
        candidate.inputs, candidate.outputs = names.restore(candidate.inputs), names.restore(candidate.outputs)
        return _verify(candidate, backend, profile, precision, samples, references, options, _Run(SilentProgress()), transports)

    debugged = debug_build(DebugRequest(
        # the samples under the user's input names (the installed artifact's bindings) and the converters' (ctx.model)
        backend, ctx, profile, options, artifact, verifications, device_error, samples.with_aliases(names.tensors),
        profile.tolerance_for(precision), transports,
        verify=verify_candidate,
        install=lambda candidate, installed: install_artifact(candidate, staging, replacing=installed), primary=primary_result))
    for record in debugged.stages:
        run.add(record)
    artifact, verifications, device_error = debugged.artifact, debugged.verifications, debugged.device_error
    for result in verifications:
        result.calibration_samples = prepared.calibration_samples
        result.first_divergence, result.layers, result.locate = (user_names_in(part, ctx.user_nodes, names)
                                                                 for part in (result.first_divergence, result.layers, result.locate))
    debugged.quantization = user_names_in(debugged.quantization, ctx.user_nodes, names)
    files = [artifact.path, *artifact.extra_files]
    report = BuildReport(
        edgekit_version=__version__,
        target=profile.name,
        backend=backend.name,
        precision=precision,
        artifact=artifact.path.name,
        artifact_sha256=sha256_tree(artifact.path),
        artifact_bytes=sum(size_of(p) for p in files),
        artifact_files=[p.name for p in files],
        artifact_files_sha256={p.name: sha256_tree(p) for p in files},
        artifact_runtime=artifact.runtime,
        source_model=export.source_name(source),
        source_model_sha256=(exported.source_sha256 or loaded.sha256) if exported else loaded.sha256,
        inputs=loaded.inputs,
        outputs=loaded.outputs,
        io={"inputs": artifact.inputs, "outputs": artifact.outputs},
        stages=run.stages,
        verification=primary_result(verifications),
        verifications=verifications if transports else [],
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        sanitized_names=names.report(loaded.inputs, loaded.outputs),
        **prepared.report_keys(),
        quantization=debugged.quantization,
        export=export.keep(exported, work_dir / STAGING, stem) if exported else None,
    )
    return report, device_error


def _fallback_budget(profile: TargetProfile, options: BuildOptions, precision: str) -> float | None:
    mode, budget = fallback_mode(profile, options, precision)
    return budget if mode == "auto" else None


def install_artifact(artifact: Artifact, folder: Path, replacing: Artifact | None = None) -> Artifact:
    """Copy the artifact's files into ``folder`` (the staging folder: verification runs on these copies, publishing
    renames them into place) under their final names; files of ``replacing`` it does not have are removed."""
    installed = []
    for source in (artifact.path, *artifact.extra_files):
        target = folder / source.name
        if source.resolve() != target.resolve():
            remove_item(target)  # a fallback round's file replaces the one before it
            copy_item(source, target)
        installed.append(folder / source.name)
    for stale in (replacing.path, *replacing.extra_files) if replacing is not None else ():
        if stale not in installed:
            remove_item(stale)
    return dataclasses.replace(artifact, path=installed[0], extra_files=installed[1:])


def _export(source: Any, settings: export.ExportSettings, run: _Run, work_dir: Path) -> export.ExportResult:
    with run.stage("export", f"Exporting {export.source_name(source)} to ONNX and checking it against the source"):
        result = export.export_model(source, settings, work_dir)
    info = result.info
    worst = min((o["sqnr_db"] for o in info["outputs"].values()), default=None)
    run.add(StageRecord("export", result.seconds, info["tool"], info["tool_version"],
                        {"exporter": info["exporter"], "fallback_reason": info["fallback_reason"], "opset": info["opset"],
                         "min_sqnr_db": worst, "samples": info["samples"]}))
    return result


def _verify(artifact, backend: Backend, profile: TargetProfile, precision: str, samples: SampleSet, references: list,
            options: BuildOptions, run: _Run, transports: list[Transport]) -> tuple[list[VerificationResult], EdgekitError | None]:
    where = transports[0].where if transports else "host"
    if not options.verify:
        run.add(StageRecord("verify", 0.0, None, None, {"status": "skipped"}))
        return [VerificationResult.skipped("verification disabled with --no-verify", where=where)], None
    started = time.perf_counter()
    names = ", ".join(str(t.device_name) for t in transports) or "host"
    run.progress.stage_started("verify", f"Verifying on {names}")
    results, device_error = verify_everywhere(
        artifact, samples, references, profile.tolerance_for(precision), transports or [LocalTransport()],
        warmup=options.warmup_runs if options.warmup_runs is not None else profile.latency_warmup,
        runs=options.latency_runs if options.latency_runs is not None else profile.latency_runs,
        options=backend.runner_options(artifact, profile), checks={**profile.checks, **options.checks},
    )
    primary = results[0]
    runtime, _, runtime_version = (primary.runtime or "").partition(" ")
    run.add(StageRecord("verify", round(time.perf_counter() - started, 3), runtime or None, runtime_version or None,
                        {"status": overall_status(results), "where": where, "devices": [r.device for r in results if r.device]}))
    return results, device_error


def primary_result(results: list[VerificationResult]) -> VerificationResult:
    """The report's `verification`: the first failed result, else the first skipped one, else the first."""
    for status in ("failed", "skipped"):
        for result in results:
            if result.status == status:
                return result
    return results[0]


def overall_status(results: list[VerificationResult]) -> str:
    """failed if any failed; passed only if all passed; otherwise skipped."""
    statuses = {r.status for r in results}
    if "failed" in statuses:
        return "failed"
    return "passed" if statuses == {"passed"} else "skipped"
