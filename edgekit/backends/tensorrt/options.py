"""The TensorRT backend's [backend_options] (docs/tensorrt.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgekit.backends.options import BackendOptions, option

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class TrtOptions(BackendOptions):
    label = "TensorRT"
    docs = "docs/tensorrt.md"

    workspace_mib: int | None = option(None, minimum=1, maximum=1 << 20)
    builder_optimization_level: int | None = option(None, minimum=0, maximum=5)
    timing_cache: bool = option(True)
    dla_core: int | None = option(None, minimum=0, maximum=15)
    gpu_fallback: bool = option(False)
    int8_op_types: tuple[str, ...] = option(("Conv", "ConvTranspose", "Gemm", "MatMul"))
    int8_exclude_nodes: tuple[str, ...] = option(())
    calibration_method: str = option("minmax", choices=CALIBRATION_METHODS)
    build_timeout_s: float = option(3600.0, minimum=1)
    builder: str = option("auto", choices=("auto", "python", "trtexec"))  # "auto": Python API, else trtexec
    # the GPU the target's engines are for ([hardware] of the profile): a local build on another GPU is refused
    compute_capability: str | None = option(None, table="hardware")
    gpu: str | None = option(None, table="hardware")

    def validate(self, where: str, tables: dict[str, dict[str, Any]]) -> None:
        if self.compute_capability is not None and not re.fullmatch(r"\d+\.\d+", self.compute_capability):
            raise self.error(where, "hardware.compute_capability", f"must be MAJOR.MINOR, e.g. \"8.7\"; got {self.compute_capability!r}")
        if not self.int8_op_types:
            raise self.error(where, "backend_options.int8_op_types", "must name at least one op type")
        dla_cores = tables["hardware"].get("dla_cores")
        if self.dla_core is not None and isinstance(dla_cores, int) and self.dla_core >= dla_cores:
            raise self.error(where, "backend_options.dla_core", f"is {self.dla_core}, but [hardware] dla_cores says this device has {dla_cores}")
