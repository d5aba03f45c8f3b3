"""What a backend contributes: converting (and quantizing) a checked, simplified ONNX model.

Loading, simplifying, reference runs, verification and the report live once, in the pipeline.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit._lazy import version_of
from edgekit.calibration import SampleSet
from edgekit.errors import MissingDependency
from edgekit.profiles import TargetProfile
from edgekit.types import Artifact, StageRecord, TensorSpec


@dataclass
class ConvertContext:
    model_path: Path  # the simplified, shape-fixed ONNX model
    model: Any  # its ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    profile: TargetProfile
    precision: str
    calibration: SampleSet | None
    work_dir: Path
    artifact_stem: str
    stages: list[StageRecord] = field(default_factory=list)
    log: Callable[[str], None] = lambda message: None
    # For backends that build on the device (TensorRT) or keep dynamic dims: the transport of --device,
    # the user's model before shapes were fixed, NAME -> (min, opt, max) ranges, and the output folder.
    transport: Any = None
    source_path: Path | None = None
    shape_ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    out_dir: Path | None = None

    def record(self, name: str, started: float, tool: str | None = None, tool_version: str | None = None, **detail: Any) -> StageRecord:
        stage = StageRecord(name, round(time.perf_counter() - started, 3), tool, tool_version, detail)
        self.stages.append(stage)
        return stage


class Backend(ABC):
    name: str
    extra: str  # the pip extra that installs its tools
    runtime: str  # the device-runner runtime that executes its artifacts
    #: ONNX ops known not to convert (op_type -> reason), reported by `edgekit inspect`
    unsupported_ops: dict[str, str] = {}

    #: the distributions whose versions identify this backend's tools (and key the build cache)
    tool_distributions: tuple[str, ...] = ()

    def check_tools(self) -> dict[str, str]:
        """Raise MissingDependency naming the extra if a tool is missing; return {tool: version}."""
        versions = {}
        for dist in self.tool_distributions:
            version = version_of(dist)
            if version is None:
                raise MissingDependency(f"the {self.name} backend needs '{dist}', which is not installed", hint=f"pip install 'edgekit[{self.extra}]'")
            versions[dist] = version
        return versions

    @abstractmethod
    def convert(self, ctx: ConvertContext) -> Artifact:
        """Write the artifact into ``ctx.work_dir`` and return it; record stages on ``ctx``."""

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        """Options passed to the device runner for this artifact (threads, runtime flags)."""
        return {}

    def blocking_ops(self, model: Any) -> list[str]:
        """Nodes of ``model`` whose op this backend cannot take, as 'op (node names)'."""
        found: dict[str, list[str]] = {}
        for node in model.graph.node:
            if node.op_type in self.unsupported_ops:
                found.setdefault(node.op_type, []).append(node.name or "<unnamed>")
        return [f"{op} ({', '.join(names[:5])}{'...' if len(names) > 5 else ''}): {self.unsupported_ops[op]}" for op, names in found.items()]
