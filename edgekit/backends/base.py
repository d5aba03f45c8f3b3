"""What a backend contributes: converting (and quantizing) a checked, simplified ONNX model.

Loading, simplifying, reference runs, verification and the report live once, in the pipeline. A backend
declares what it can do on :class:`Backend` (every ability has a default here, so the pipeline never asks
``hasattr``), takes its typed options from :attr:`Backend.Options`, and implements :meth:`Backend.convert`.
``docs/adding-a-backend.md`` walks through a complete one.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit._lazy import version_of
from edgekit.backends.options import BackendOptions
from edgekit.calibration import SampleSet
from edgekit.errors import MissingDependency
from edgekit.modelio import ShapeRange
from edgekit.profiles import TargetProfile
from edgekit.types import Artifact, StageRecord, TensorSpec

if TYPE_CHECKING:
    from edgekit.transport.base import Transport


@dataclass(frozen=True)
class BuildHost:
    """For backends that build on the machine that will run the artifact (TensorRT engines).

    ``transport`` reaches the device of ``--device`` (None: this host); ``shape_ranges`` holds
    NAME -> (min, opt, max) from ``--input-shape NAME=MIN:OPT:MAX``; ``out_dir`` is the build's output
    folder, where a backend may leave a by-product for the user when it cannot finish (the QDQ model).
    """

    transport: Transport | None = None
    shape_ranges: dict[str, ShapeRange] = field(default_factory=dict)
    out_dir: Path | None = None
    #: build on this host even when its GPU is not the one the target profile names (--allow-foreign-gpu)
    allow_foreign_gpu: bool = False


@dataclass(frozen=True)
class ArtifactTensor:
    """A tensor inside a built artifact that its runtime can return by name (for locating a divergence)."""

    name: str
    shape: tuple[int, ...] | None = None
    output_of: str | None = None  # the ONNX graph output it is (through the artifact's output bindings)


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
    options: Any = None  # the backend's typed Options, parsed from the profile
    source_path: Path | None = None  # the user's model, before shapes were fixed and the graph simplified
    #: ONNX nodes (edgekit.debug.graph.node_id names) to keep in float (fp32 for fp16 builds); honoured for
    #: precisions in Backend.float_layer_precisions. A backend records what it really kept float, by ONNX node,
    #: in ``Artifact.details["float_layers"]`` (node -> why)
    float_layers: frozenset[str] = frozenset()
    #: a folder shared by every conversion of one build (the float twin, fallback rounds): a backend may keep
    #: results there that do not depend on the precision (onnx2tf's SavedModel, tensor maps); None: work_dir
    shared_dir: Path | None = None
    #: for backends whose conversion checks a host-side stand-in before building (TensorRT's QDQ model): run
    #: per-layer fallback there too, within this share of the parameters; None: off (--fallback none)
    fallback_budget: float | None = None
    build_host: BuildHost = field(default_factory=BuildHost)
    stages: list[StageRecord] = field(default_factory=list)
    log: Callable[[str], None] = lambda message: None
    #: node ids in ``model`` -> the user's node ids, where edgekit renamed them for the converters (edgekit.names):
    #: messages name the user's nodes, and options naming the user's nodes find them in ``model``
    user_nodes: dict[str, str] = field(default_factory=dict)

    def user_node(self, node: str) -> str:
        """The user's id of a node of ``model``."""
        return self.user_nodes.get(node, node)

    def model_node(self, user_node: str) -> str:
        """The id in ``model`` of a node the user named."""
        return next((ours for ours, theirs in self.user_nodes.items() if theirs == user_node), user_node)

    def record(self, name: str, started: float, tool: str | None = None, tool_version: str | None = None, **detail: Any) -> StageRecord:
        stage = StageRecord(name, round(time.perf_counter() - started, 3), tool, tool_version, detail)
        self.stages.append(stage)
        return stage


class Backend(ABC):
    """A conversion route to one runtime. Subclasses set the class attributes and implement :meth:`convert`."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs its tools
    runtime: ClassVar[str]  # the remote runtime (edgekit/remote/rt_<runtime>.py) that executes its artifacts
    #: its typed [backend_options]; parsed when a profile naming this backend loads
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: the distributions whose versions identify this backend's tools (and key the build cache)
    tool_distributions: ClassVar[tuple[str, ...]] = ()
    #: ONNX ops known not to convert (op_type -> reason), reported by `edgekit inspect` and refused before converting
    unsupported_ops: ClassVar[dict[str, str]] = {}
    #: whether --input-shape NAME=MIN:OPT:MAX ranges make sense (one artifact for a range of shapes)
    supports_shape_ranges: ClassVar[bool] = False
    #: precisions for which convert() honours ConvertContext.float_layers (per-layer precision fallback)
    float_layer_precisions: ClassVar[frozenset[str]] = frozenset()
    #: how the tensors inside a built artifact can be read to locate a divergence: "named" means the runtime
    #: returns any tensor of the artifact by name (artifact_tensors() lists them; a float twin maps them to ONNX
    #: tensors by value); "reconvert" means converting again with the wanted ONNX tensors added as graph outputs
    #: (works for every backend, at the price of a conversion); "none" means it cannot be done
    intermediate_outputs: ClassVar[str] = "reconvert"

    def options(self, profile: TargetProfile) -> BackendOptions:
        return self.Options.from_profile(profile)

    def check_tools(self) -> dict[str, str]:
        """Raise MissingDependency naming the extra if a tool is missing; return {tool: version}."""
        versions = {}
        for dist in self.tool_distributions:
            version = version_of(dist)
            if version is None:
                raise MissingDependency(f"the {self.name} backend needs '{dist}', which is not installed", hint=f"pip install 'edgekit[{self.extra}]'")
            versions[dist] = version
        return versions

    def needs_calibration(self, profile: TargetProfile, precision: str) -> bool:
        """Whether building ``precision`` needs calibration data (int8 activations do)."""
        return precision == "int8"

    def blocking_ops(self, model: Any) -> list[str]:
        """Nodes of ``model`` whose op this backend cannot take, as 'op (node names): reason'."""
        found: dict[str, list[str]] = {}
        for node in model.graph.node:
            if node.op_type in self.unsupported_ops:
                found.setdefault(node.op_type, []).append(node.name or "<unnamed>")
        return [f"{op} ({', '.join(names[:5])}{'...' if len(names) > 5 else ''}): {self.unsupported_ops[op]}" for op, names in found.items()]

    def blocking_ops_at(self, model: Any, precision: str) -> list[str]:
        """:meth:`blocking_ops` for one precision: a backend adds ops it can convert but not at ``precision``."""
        return self.blocking_ops(model)

    def float_only_layers(self, model: Any, precision: str) -> dict[str, str]:
        """ONNX nodes this backend cannot build at ``precision`` and keeps in float by itself (node name -> why)."""
        return {}

    def float_layer_ops(self, precision: str) -> frozenset[str] | None:
        """ONNX op types whose nodes change when kept in float at ``precision`` (None: any op); per-layer
        fallback only ranks layers holding one of them."""
        return None

    @abstractmethod
    def convert(self, ctx: ConvertContext) -> Artifact:
        """Write the artifact into ``ctx.work_dir`` and return it; record stages on ``ctx``."""

    def build_host_identity(self) -> dict[str, Any]:
        """Facts about this machine that change what :meth:`convert` writes here (TensorRT: the GPU, its driver and
        TensorRT's version). Part of the build cache key of builds made on this host; most artifacts do not depend on it."""
        return {}

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        """Options passed to the remote runtime for this artifact (threads, runtime flags)."""
        return {}

    # --- locating a divergence (edgekit/debug) ------------------------------------------------

    def artifact_tensors(self, artifact: Artifact) -> list[ArtifactTensor]:
        """For ``intermediate_outputs == "named"``: the tensors the runtime can return, in execution order."""
        return []

    def probe_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        """Runner options for reading the named tensors of :meth:`artifact_tensors` (default: the usual ones)."""
        return self.runner_options(artifact, profile)

    def float_twin(self, ctx: ConvertContext, artifact: Artifact) -> Artifact:
        """The same conversion at fp32: same graph, same tensor names, float values. Locating matches its
        tensors to ONNX tensors by value, then reads the same names from ``artifact``."""
        if artifact.precision == "fp32":
            return artifact
        folder = ctx.work_dir / "float-twin"
        folder.mkdir(exist_ok=True)
        twin = dataclasses.replace(ctx, precision="fp32", float_layers=frozenset(), work_dir=folder, stages=[],
                                   artifact_stem=f"{ctx.artifact_stem}-twin", log=lambda message: None)
        return self.convert(twin)
