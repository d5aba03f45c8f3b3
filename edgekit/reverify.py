"""`edgekit verify OUT`: verify an existing build again (on this host or on devices) from its report.

Every artifact file's sha256 is re-checked against the report first: a file that changed since the build
is refused, so a report never vouches for bytes it did not measure. The pass criteria come from the target
profile (or ``--tolerance`` on the command line), never from the report being checked: a report edited to
loosen its tolerances cannot loosen its own check.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from edgekit.backends import get_backend
from edgekit.calibration import SampleSet
from edgekit.errors import DeviceError, InputError
from edgekit.fsutil import sha256_tree
from edgekit.modelio import LoadedModel, apply_input_shapes, load_model
from edgekit.prepare import samples_from_source
from edgekit.profiles import TargetProfile, Tolerance, override_tolerance, resolve_target
from edgekit.reference import run_reference
from edgekit.report import load_report, report_from_dict
from edgekit.transport.base import Transport
from edgekit.transport.local import LocalTransport
from edgekit.types import Artifact, BuildReport, IOBinding
from edgekit.verify import verify_everywhere


def _report_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / "edgekit-report.json"
    if path.suffix == ".json":
        return path
    return path.parent / "edgekit-report.json"  # an artifact: its report sits beside it


def _checked_artifact(data: dict, folder: Path) -> Artifact:
    files = [folder / name for name in data.get("artifact_files") or [data["artifact"]]]
    recorded = {**(data.get("artifact_files_sha256") or {}), data["artifact"]: data["artifact_sha256"]}
    for file in files:
        if not file.exists():
            raise InputError(f"{file}: the artifact named by the report is missing", hint="rebuild with 'edgekit build', or restore the output folder")
        if file.name not in recorded:
            continue  # reports from before per-file hashes recorded only the first file
        actual = sha256_tree(file)
        if actual != recorded[file.name]:
            raise InputError(f"{file}: the artifact changed since it was built (sha256 {actual[:16]}…, the report says {recorded[file.name][:16]}…)",
                             hint="rebuild it; edgekit will not vouch for bytes it did not build")
    io = data.get("io") or {}
    return Artifact(path=files[0], backend=data["backend"], precision=data["precision"], runtime=data.get("artifact_runtime") or data["backend"],
                    inputs=[IOBinding.from_dict(b) for b in io.get("inputs", [])],
                    outputs=[IOBinding.from_dict(b) for b in io.get("outputs", [])], extra_files=files[1:],
                    # what the build recorded about the artifact (e.g. the ncnn runtime options it must run with)
                    details={k: v for stage in data.get("stages", []) for k, v in (stage.get("detail") or {}).items()})


def _source_model(data: dict, folder: Path, model: Path | None) -> Path:
    candidates = [model] if model else [Path(data["source_model"]), folder / Path(data["source_model"]).name]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise InputError(f"the source model {data['source_model']} is not found (the reference outputs are computed from it)",
                     hint="pass --model PATH")


def _as_built(loaded: LoadedModel, data: dict, path: Path) -> LoadedModel:
    """The model as the build converted it: rewritten to float (--dequantize), inputs frozen (--fix-input), and
    the input shapes the report records (--input-shape or from the sample data)."""
    from edgekit import ortops
    from edgekit.fix_inputs import apply_fixed_inputs
    from edgekit.modelio import check_model, describe

    if data.get("dequantized"):
        proto = check_model(ortops.dequantize(loaded.proto)[0], path)
        loaded = dataclasses.replace(loaded, proto=proto, inputs=describe(proto)[0], outputs=describe(proto)[1])
    fixes = {name: (f["value"] if "value" in f else f["given"]) for name, f in (data.get("fixed_inputs") or {}).items()}
    loaded, _ = apply_fixed_inputs(loaded, fixes)
    shapes = {t["name"]: tuple(t["shape"]) for t in data.get("inputs", []) if all(isinstance(d, int) for d in t["shape"])}
    return apply_input_shapes(loaded, {k: v for k, v in shapes.items() if any(s.name == k and not s.is_static for s in loaded.inputs)}, require_static=False)


def _declared_checks(verification: dict) -> dict[str, dict[str, float]]:
    checks: dict[str, dict[str, float]] = {}
    for check in verification.get("checks") or []:
        checks.setdefault(check["output"], {})[check["metric"]] = float(check["min"])
    return checks


@dataclass
class ExistingBuild:
    """A build folder read back: its report, the artifact (sha256 checked), the source model (shaped as built), and
    the samples and tolerance it was verified with."""

    data: dict
    folder: Path
    artifact: Artifact
    source: Path
    loaded: LoadedModel
    profile: TargetProfile
    samples: SampleSet
    tolerance: Tolerance


def load_build(path: Path, model: Path | None = None, tolerance_overrides: list[str] | tuple[str, ...] = ()) -> ExistingBuild:
    report_path = _report_path(path)
    data = load_report(report_path)
    folder = report_path.parent
    artifact = _checked_artifact(data, folder)
    exported = (data.get("export") or {}).get("onnx")
    # a PyTorch/TensorFlow source was exported to ONNX at build time; that checked ONNX model is the reference
    source = folder / exported if exported and model is None else _source_model(data, folder, model)
    loaded = load_model(source)
    expected = data["export"]["onnx_sha256"] if exported and model is None else data["source_model_sha256"]
    if loaded.sha256 != expected:
        raise InputError(f"{source}: this is not the model the artifact was built from (sha256 differs from the report)",
                         hint="pass --model with the original ONNX model" if not exported else "rebuild with 'edgekit build'")
    loaded = _as_built(loaded, data, source)
    profile = resolve_target(data["target"])
    verification = data["verification"]
    samples = samples_from_source(verification.get("input_source") or "random(seed=0)", int(verification.get("samples") or 8),
                                  loaded.inputs, profile.preprocessing)
    tolerance = override_tolerance(profile.tolerance_for(data["precision"]), tolerance_overrides, data["precision"])
    return ExistingBuild(data, folder, artifact, source, loaded, profile, samples, tolerance)


def reverify(path: Path, transports: list[Transport] | None = None, model: Path | None = None,
             tolerance_overrides: list[str] | tuple[str, ...] = ()) -> tuple[BuildReport, DeviceError | None]:
    build = load_build(path, model, tolerance_overrides)
    data, folder, artifact, profile, samples, tolerance = build.data, build.folder, build.artifact, build.profile, build.samples, build.tolerance
    verification = data["verification"]
    references = run_reference(build.loaded.proto, samples)
    backend = get_backend(data["backend"], profile)
    latency = data["verification"].get("latency_ms") or {}
    for place in transports or []:
        place.use_profile(profile)
    results, error = verify_everywhere(
        artifact, samples, references, tolerance, transports or [LocalTransport()],
        warmup=int(latency.get("warmup", profile.latency_warmup)), runs=int(latency.get("runs", profile.latency_runs)),
        options=backend.runner_options(artifact, profile), checks={**_declared_checks(verification), **profile.checks},
    )
    for result in results:
        result.calibration_samples = int(verification.get("calibration_samples") or 0)
    from edgekit.build_outputs import write_report
    from edgekit.pipeline import primary_result

    report = report_from_dict(data)
    report.verification = primary_result(results)
    report.verifications = results if transports else []
    report.created_at = data.get("created_at", "")
    report.cache = {**(data.get("cache") or {}), "reverified_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_report(report, folder)
    return report, error
