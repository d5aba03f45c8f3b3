"""`edgekit inspect`: what is in a model, and what a target's backend would refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailable
from edgekit.modelio import load_model, op_histogram, parameter_count


def inspect_model(path: Path, target: str | None = None) -> dict[str, Any]:
    loaded = load_model(path)
    info: dict[str, Any] = {
        "path": str(path),
        "opset": loaded.opset,
        "bytes": loaded.file_bytes,
        "sha256": loaded.sha256,
        "parameters": parameter_count(loaded.proto),
        "nodes": len(loaded.proto.graph.node),
        "inputs": [t.to_dict() for t in loaded.inputs],
        "outputs": [t.to_dict() for t in loaded.outputs],
        "ops": dict(op_histogram(loaded.proto).most_common()),
        "external_data": [str(p) for p in loaded.external_files],
        "onnxruntime_only_ops": _ort_only(loaded.proto),
    }
    if target:
        from edgekit.backends import get_backend
        from edgekit.profiles import resolve_target

        profile = resolve_target(target)
        info.update(target=profile.name, backend=profile.backend, unsupported=[])
        try:
            backend = get_backend(profile.backend, profile)
        except BackendUnavailable as exc:
            info["backend_note"] = exc.message
        else:
            info["unsupported"] = backend.blocking_ops(loaded.proto)
            dynamic = [t.name for t in loaded.inputs if not t.is_static]
            if dynamic and profile.static_shapes:
                info["backend_note"] = (f"inputs with dynamic dims need --input-shape for this target, or sample data to take them from: "
                                        f"{', '.join(dynamic)}")
    return info


def _ort_only(model: Any) -> dict[str, list[str]]:
    """Ops only onnxruntime runs (a build refuses them; --dequantize rewrites the quantized ones): op -> nodes."""
    from edgekit.ortops import ort_only_nodes

    return ort_only_nodes(model)
