"""A complete backend in one file, registered from outside edgekit: the ONNX model itself is the artifact and
onnxruntime runs it. tests/test_backend_contract.py proves that adding it needs no edit anywhere in edgekit;
docs/adding-a-backend.md walks through it."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any

from edgekit.backends import Backend, ConvertContext
from edgekit.backends.options import BackendOptions, option
from edgekit.profiles import TargetProfile
from edgekit.types import Artifact, IOBinding


@dataclass(frozen=True)
class OnnxCopyOptions(BackendOptions):
    label = "onnx-copy"

    num_threads: int = option(1, minimum=1, maximum=64)


class OnnxCopyBackend(Backend):
    name = "onnx-copy"
    extra = "core"
    runtime = "onnxruntime"  # edgekit/remote/rt_onnxruntime.py runs the artifact on the host or a device
    Options = OnnxCopyOptions
    tool_distributions = ("onnxruntime",)
    unsupported_ops = {"TopK": "this backend has no TopK"}

    def convert(self, ctx: ConvertContext) -> Artifact:
        started = time.perf_counter()
        target = ctx.work_dir / f"{ctx.artifact_stem}.onnx"
        shutil.copyfile(ctx.model_path, target)
        ctx.record("convert", started, "copy", None, threads=ctx.options.num_threads)
        return Artifact(path=target, backend=self.name, precision=ctx.precision, runtime=self.runtime,
                        inputs=[IOBinding(spec.name, spec.name) for spec in ctx.inputs],
                        outputs=[IOBinding(spec.name, spec.name) for spec in ctx.outputs])

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        return {"num_threads": self.options(profile).num_threads}
