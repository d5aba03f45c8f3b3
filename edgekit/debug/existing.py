"""`edgekit locate OUT`: locate the first divergent layer of a build that already exists.

The artifact is checked against the report's sha256 first (as `edgekit verify` does). The model is loaded,
shaped and simplified again as the build did (the same tools give the same graph), so that the backend can
make the float twin the tensor names are mapped through; the report is then updated in place.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from edgekit.backends import ConvertContext, get_backend
from edgekit.debug.locate import LocateRequest, locate
from edgekit.debug.session import attach, locate_stage
from edgekit.errors import InputError
from edgekit.modelio import apply_input_shapes, load_model, save_model
from edgekit.profiles import Tolerance, resolve_target
from edgekit.reference import run_reference
from edgekit.report import load_report, report_from_dict
from edgekit.reverify import _checked_artifact, _report_path, _samples, _source_model
from edgekit.simplify import simplify
from edgekit.transport.base import Transport
from edgekit.types import BuildReport


def locate_build(path: Path, transports: list[Transport] | None = None, model: Path | None = None) -> BuildReport:
    report_path = _report_path(path)
    data = load_report(report_path)
    folder = report_path.parent
    artifact = _checked_artifact(data, folder)
    source = _source_model(data, folder, model)
    loaded = load_model(source)
    if loaded.sha256 != data["source_model_sha256"]:
        raise InputError(f"{source}: this is not the model the artifact was built from (sha256 differs from the report)",
                         hint="pass --model with the original model")
    shapes = {t["name"]: tuple(t["shape"]) for t in data.get("inputs", []) if all(isinstance(d, int) for d in t["shape"])}
    loaded = apply_input_shapes(loaded, {k: v for k, v in shapes.items() if any(s.name == k and not s.is_static for s in loaded.inputs)},
                                require_static=False)
    profile = resolve_target(data["target"])
    backend = get_backend(data["backend"], profile)
    backend.check_tools()
    samples = _samples(data, loaded, profile)
    recorded = data["verification"].get("tolerances") or {}
    tolerance = Tolerance(**recorded) if recorded else profile.tolerance_for(data["precision"])
    simplified = loaded.proto
    if not any(s["name"] == "simplify" and "skipped" in (s.get("detail") or {}) for s in data.get("stages", [])):
        simplified = simplify(loaded.proto, samples, run_reference(loaded.proto, samples)).model
    report = report_from_dict(data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".edgekit-locate-", dir=folder) as scratch:
        work = Path(scratch).resolve()
        floats = frozenset(layer["node"] for layer in (data.get("quantization") or {}).get("float_layers") or [])
        ctx = ConvertContext(model_path=save_model(simplified, work / source.name), model=simplified, inputs=loaded.inputs, outputs=loaded.outputs,
                             profile=profile, precision=data["precision"], calibration=None, work_dir=work, artifact_stem=Path(data["artifact"]).stem,
                             options=backend.options(profile), source_path=source, float_layers=floats, shared_dir=work)
        located = locate(LocateRequest(backend, ctx, artifact, samples, tolerance, transports[0] if transports else None))
    report.stages = [s for s in report.stages if s.name != "locate"] + [locate_stage(located, time.perf_counter() - started)]
    attach(report.verification, located)
    from edgekit.pipeline import write_report

    write_report(report, folder)
    return report
