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
from edgekit.modelio import save_model
from edgekit.reference import run_reference
from edgekit.report import report_from_dict
from edgekit.reverify import load_build
from edgekit.simplify import simplify
from edgekit.transport.base import Transport
from edgekit.types import BuildReport


def locate_build(path: Path, transports: list[Transport] | None = None, model: Path | None = None) -> BuildReport:
    build = load_build(path, model)
    data, loaded, profile, samples, source = build.data, build.loaded, build.profile, build.samples, build.source
    backend = get_backend(data["backend"], profile)
    backend.check_tools()
    simplified = loaded.proto
    if not any(s["name"] == "simplify" and "skipped" in (s.get("detail") or {}) for s in data.get("stages", [])):
        simplified = simplify(loaded.proto, samples, run_reference(loaded.proto, samples)).model
    report = report_from_dict(data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".edgekit-locate-", dir=build.folder) as scratch:
        work = Path(scratch).resolve()
        floats = frozenset(layer["node"] for layer in (data.get("quantization") or {}).get("float_layers") or [])
        ctx = ConvertContext(model_path=save_model(simplified, work / source.name), model=simplified, inputs=loaded.inputs, outputs=loaded.outputs,
                             profile=profile, precision=data["precision"], calibration=None, work_dir=work, artifact_stem=Path(data["artifact"]).stem,
                             options=backend.options(profile), source_path=source, float_layers=floats, shared_dir=work)
        located = locate(LocateRequest(backend, ctx, build.artifact, samples, build.tolerance, transports[0] if transports else None))
    report.stages = [s for s in report.stages if s.name != "locate"] + [locate_stage(located, time.perf_counter() - started)]
    attach(report.verification, located)
    from edgekit.build_outputs import write_report

    write_report(report, build.folder)
    return report
