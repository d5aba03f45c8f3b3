"""A build's outputs: its cache key, the cache entry it is served from or stored in, and the files published
into the output folder (staged, then renamed into place by :mod:`edgekit.publish`)."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import cache, export
from edgekit.backends import Backend
from edgekit.debug.session import fallback_mode
from edgekit.errors import ModelError, OptionsError
from edgekit.fsutil import atomic_write_text, sha256_tree, temp_folder
from edgekit.profiles import TargetProfile
from edgekit.publish import REPORT_NAME, publish
from edgekit.report import report_from_dict, report_to_json
from edgekit.transport.base import Transport
from edgekit.types import BuildOptions, BuildReport, StageRecord


def cache_key(model: Any, profile: TargetProfile, precision: str, options: BuildOptions, tool_versions: dict[str, str],
               transports: list[Transport], backend: Backend, exporting: export.ExportSettings | None) -> str | None:
    # an in-memory module is never cached: its code can change without any file changing
    if not isinstance(model, Path) or not (model.is_file() or (exporting is not None and model.is_dir())):
        return None  # the load stage explains what is wrong with it
    settings = {"precision": precision, "input_shapes": sorted(options.input_shapes.items()), "simplify": options.simplify,
                "verify": options.verify, "samples": options.max_samples, "seed": options.seed,
                "runs": options.latency_runs, "warmup": options.warmup_runs}
    if options.input_shape_ranges:
        settings["input_shape_ranges"] = sorted(options.input_shape_ranges.items())
    settings["backend_options"] = dataclasses.asdict(backend.options(profile))
    # builds made on a device are never served from the cache; one made here may depend on this machine (TensorRT)
    settings["build_host"] = None if transports else backend.build_host_identity()
    settings.update(real_export_settings(options))
    settings["locate"], settings["fallback"] = options.locate, fallback_mode(profile, options, precision)
    if exporting is not None:
        settings["export"] = export.cache_identity(exporting)
    place = [str(t.device_name) for t in transports] or ["host"]
    calib = options.calib if options.calib is not None and options.calib.exists() else None
    try:
        return cache.build_key(model, calib, profile.to_dict(), settings, tool_versions, place)
    except ModelError:
        return None  # unsafe external data: nothing was read for the key, and the load stage refuses the model


def real_export_settings(options: BuildOptions) -> dict:
    """Cache-key entries of --verify-data, --fix-input, --dequantize and --check (files by content)."""
    def content(path: Path | str) -> str:
        return sha256_tree(Path(path)) if Path(path).exists() else f"missing:{path}"

    settings: dict = {}
    if options.verify_data is not None:
        settings["verify_data"] = content(options.verify_data)
    if options.fix_inputs:
        settings["fix_inputs"] = {k: content(v[1:]) if isinstance(v, str) and v.startswith("@") else repr(v) for k, v in sorted(options.fix_inputs.items())}
    if options.dequantize:
        settings["dequantize"] = True
    if options.checks:
        settings["checks"] = {k: dict(sorted(v.items())) for k, v in sorted(options.checks.items())}
    return settings


def restore(found: cache.Lookup, out_dir: Path, add_stage: Callable[[StageRecord], None]) -> BuildReport:
    """Publish a verified cache entry into ``out_dir`` as a build would, and return its report."""
    started = time.perf_counter()
    assert found.entry is not None and found.report is not None
    report = report_from_dict(found.report)
    report.cache = {"hit": True, "key": found.entry.key}
    staging = temp_folder(ensure_dir(out_dir), "publish")
    try:
        cache.copy_files(found.entry, kept_files(found.report), staging)
        publish_build(report, staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    add_stage(StageRecord("cache", round(time.perf_counter() - started, 3), "edgekit-cache", None,
                        {"hit": True, "key": found.entry.key[:16]}))
    return report


def store(key: str | None, report: BuildReport, staging: Path, replace: bool, dropped: str | None, message: Callable[[str], None]) -> dict | None:
    """Store a good build in the cache; returns the report's ``cache`` section, which says whether it was written."""
    if key is None:
        return None
    info = {"hit": False, "key": key, **({"dropped": dropped} if dropped else {})}
    if report.verification.status == "failed":
        return {**info, "stored": False}  # a failed build is never served again
    report.cache = info
    summary = {"target": report.target, "precision": report.precision, "artifact": report.artifact,
               "model": Path(report.source_model).name, "status": report.verification.status}
    try:
        cache.store(key, [staging / name for name in kept_files(report.to_dict())], report_to_json(report), summary, replace=replace)
    except OSError as exc:  # a cache that cannot be written (full, read-only) must never fail a good build
        message(f"cache not written: {exc}; the build itself is complete")
        return {**info, "stored": False, "not_written": str(exc)}
    return {**info, "stored": True}


def publish_build(report: BuildReport, staging: Path, out_dir: Path) -> None:
    """Write the reports into ``staging``, then publish it into ``out_dir`` (edgekit.publish)."""
    write_report(report, staging)
    publish(staging, out_dir, kept_files(report.to_dict()))
    report.report_path = out_dir / REPORT_NAME


def kept_files(data: dict) -> list[str]:
    """The files of a build worth caching: the artifact's, and the exported ONNX model of a PyTorch/TensorFlow source."""
    exported = (data.get("export") or {}).get("onnx")
    return [*(data.get("artifact_files") or [data["artifact"]]), *([exported] if exported else [])]


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionsError(f"cannot create output folder {path}: {exc}") from None
    return path


def write_report(report: BuildReport, out_dir: Path) -> Path:
    """edgekit-report.json (the contract) and report.html (for people), both atomically."""
    from edgekit.html_report import write_html
    from edgekit.report import report_to_dict

    path = out_dir / REPORT_NAME
    atomic_write_text(path, report_to_json(report))
    write_html(report_to_dict(report), out_dir)
    report.report_path = path
    return path
