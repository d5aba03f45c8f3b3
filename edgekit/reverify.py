"""`edgekit verify OUT`: verify an existing build again (on this host or on devices) from its report.

The artifact's sha256 is re-checked against the report first: a file that changed since the build
is refused, so a report never vouches for bytes it did not measure.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from edgekit.backends import get_backend
from edgekit.calibration import SampleSet, load_samples, random_samples
from edgekit.errors import DeviceError, InputError
from edgekit.fsutil import sha256_tree
from edgekit.modelio import apply_input_shapes, load_model
from edgekit.profiles import Tolerance, resolve_target
from edgekit.reference import run_reference
from edgekit.report import load_report, report_from_dict
from edgekit.transport.base import Transport
from edgekit.transport.local import LocalTransport
from edgekit.types import Artifact, BuildReport, IOBinding
from edgekit.verify import verify_everywhere

_RANDOM = re.compile(r"^random\(seed=(-?\d+)\)$")


def _report_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / "edgekit-report.json"
    if path.suffix == ".json":
        return path
    return path.parent / "edgekit-report.json"  # an artifact: its report sits beside it


def _checked_artifact(data: dict, folder: Path) -> Artifact:
    files = [folder / name for name in data.get("artifact_files") or [data["artifact"]]]
    for file in files:
        if not file.exists():
            raise InputError(f"{file}: the artifact named by the report is missing", hint="rebuild with 'edgekit build', or restore the output folder")
    actual = sha256_tree(files[0])
    if actual != data["artifact_sha256"]:
        raise InputError(f"{files[0]}: the artifact changed since it was built (sha256 {actual[:16]}…, the report says {data['artifact_sha256'][:16]}…)",
                         hint="rebuild it; edgekit will not vouch for bytes it did not build")
    io = data.get("io") or {}
    return Artifact(path=files[0], backend=data["backend"], precision=data["precision"], runtime=data.get("artifact_runtime") or data["backend"],
                    inputs=[IOBinding.from_dict(b) for b in io.get("inputs", [])],
                    outputs=[IOBinding.from_dict(b) for b in io.get("outputs", [])], extra_files=files[1:])


def _source_model(data: dict, folder: Path, model: Path | None) -> Path:
    candidates = [model] if model else [Path(data["source_model"]), folder / Path(data["source_model"]).name]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise InputError(f"the source model {data['source_model']} is not found (the reference outputs are computed from it)",
                     hint="pass --model PATH")


def _samples(data: dict, loaded, profile) -> SampleSet:
    verification = data["verification"]
    count = int(verification.get("samples") or 8)
    source = verification.get("input_source") or "random(seed=0)"
    if match := _RANDOM.match(source):
        return random_samples(loaded.inputs, count, int(match[1]))
    if source.startswith("calibration:"):
        return load_samples(Path(source.split(":", 1)[1]), loaded.inputs, profile.preprocessing, count)
    raise InputError(f"the report's input_source {source!r} is not one edgekit can reproduce")


def reverify(path: Path, transports: list[Transport] | None = None, model: Path | None = None) -> tuple[BuildReport, DeviceError | None]:
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
    shapes = {t["name"]: tuple(t["shape"]) for t in data.get("inputs", []) if all(isinstance(d, int) for d in t["shape"])}
    loaded = apply_input_shapes(loaded, {k: v for k, v in shapes.items() if any(s.name == k and not s.is_static for s in loaded.inputs)}, require_static=False)
    profile = resolve_target(data["target"])
    samples = _samples(data, loaded, profile)
    references = run_reference(loaded.proto, samples)
    recorded = data["verification"].get("tolerances") or {}
    tolerance = Tolerance(**recorded) if recorded else profile.tolerance_for(data["precision"])
    backend = get_backend(data["backend"], profile)
    latency = data["verification"].get("latency_ms") or {}
    for place in transports or []:
        place.use_profile(profile)
    results, error = verify_everywhere(
        artifact, samples, references, tolerance, transports or [LocalTransport()],
        warmup=int(latency.get("warmup", profile.latency_warmup)), runs=int(latency.get("runs", profile.latency_runs)),
        options=backend.runner_options(artifact, profile),
    )
    from edgekit.pipeline import primary_result, write_report

    report = report_from_dict(data)
    report.verification = primary_result(results)
    report.verifications = results if transports else []
    report.created_at = data.get("created_at", "")
    report.cache = {**(data.get("cache") or {}), "reverified_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_report(report, folder)
    return report, error
