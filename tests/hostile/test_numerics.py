"""Outputs that could fool a comparison: infinities, a reference near zero, outputs missing, extra or renamed, and
shapes numpy would silently broadcast. The output-set cases run a real ncnn artifact through the device runner."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.backends import get_backend
from edgekit.calibration import random_samples
from edgekit.metrics import compare
from edgekit.modelio import load_model
from edgekit.profiles import Tolerance, resolve_target
from edgekit.reference import run_reference
from edgekit.transport.local import LocalTransport
from edgekit.types import Artifact, IOBinding
from edgekit.verify import from_artifact_layout, verify_artifact

STRICT = resolve_target("arm").tolerance_for("fp32")
ANYTHING = Tolerance(min_cosine=-1.0, min_sqnr_db=-1e9)  # so that only finiteness can fail


def logits(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 1000)).astype(np.float32)


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["+inf", "-inf"])
@pytest.mark.parametrize("where", ["artifact", "reference", "both"])
def test_infinite_outputs_never_pass(where, value):
    reference, artifact = logits(), logits()
    artifact[:] = reference
    if where in ("artifact", "both"):
        artifact[0, 7] = value
    if where in ("reference", "both"):
        reference[0, 7] = value  # the same infinity on both sides is still no evidence of a correct artifact
    metrics = compare("y", reference, artifact, ANYTHING)
    assert not metrics.passed and not metrics.finite and math.isnan(metrics.sqnr_db)
    assert any("NaN/Inf" in failure for failure in metrics.failures)


@pytest.mark.parametrize("scale", [1e-9, 1e-30], ids=["1e-9", "1e-30"])
def test_near_zero_reference(scale):
    reference = logits() * np.float32(scale)
    assert not compare("y", reference, np.zeros_like(reference), STRICT).passed  # all signal lost
    assert not compare("y", reference, reference + np.float32(1e-6), STRICT).passed  # a "small" absolute error, 1000x the signal
    assert compare("y", reference, reference * np.float32(1 + 1e-7), STRICT).passed  # the metrics are relative: close is close


def test_near_zero_float64_reference_does_not_underflow():
    """Squares of 1e-200 underflow to 0: unnormalized, an all-zero artifact output looked noise-free (SQNR inf)."""
    reference = logits().astype(np.float64) * 1e-200
    metrics = compare("y", reference, np.zeros_like(reference), STRICT)
    assert not metrics.passed and metrics.sqnr_db == 0.0 and metrics.cosine == 0.0
    assert compare("y", reference, reference.copy(), STRICT).passed


def test_shapes_numpy_would_broadcast_are_a_mismatch():
    reference = logits()
    flat = compare("y", reference, reference.reshape(1000), STRICT)
    assert not flat.passed and "shape mismatch: reference (1, 1000) vs artifact (1000,)" in flat.failures[0]
    column = compare("y", reference, reference.reshape(1000, 1), STRICT)  # reference - column would be 1000 x 1000
    assert not column.passed and "shape mismatch" in column.failures[0]
    # Runtimes drop size-1 dims (ncnn Mats have no batch): the runner's output is reshaped back only when no element moves.
    binding = IOBinding("y", "out0")
    assert np.array_equal(from_artifact_layout(reference.reshape(1000), binding, (1, 1000)), reference)
    scrambled = from_artifact_layout(reference.reshape(2, 500), binding, (1, 1000))
    assert scrambled.shape == (2, 500) and not compare("y", reference, scrambled, STRICT).passed


# --- the artifact's outputs against the model's, with a real ncnn artifact -----------------------------------------


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    """x -> Relu -> y and x -> Neg -> z, built for ncnn (blobs out0, out1)."""
    folder = tmp_path_factory.mktemp("two-outputs")
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"), helper.make_node("Neg", ["x"], ["z"], name="neg")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 4, 4]) for name in ("y", "z")])
    model = folder / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    report = edgekit.build(model, "arm-ncnn", precision="fp32", out_dir=folder / "out")
    assert report.verification.status == "passed"
    out = folder / "out"
    artifact = Artifact(path=out / report.artifact, backend="ncnn", precision="fp32", runtime="ncnn", inputs=report.io["inputs"],
                        outputs=report.io["outputs"], extra_files=[out / name for name in report.artifact_files[1:]])
    loaded = load_model(model)
    samples = random_samples(loaded.inputs, 2, seed=0)
    return artifact, samples, run_reference(loaded.proto, samples)


def verify(artifact: Artifact, samples, references):
    profile = resolve_target("arm-ncnn")
    return verify_artifact(artifact, samples, references, profile.tolerance_for("fp32"), LocalTransport(), warmup=0, runs=1,
                           options=get_backend("ncnn").runner_options(artifact, profile))


@pytest.mark.slow
def test_missing_extra_renamed_and_swapped_outputs_fail(two_outputs):
    artifact, samples, references = two_outputs
    y, z = artifact.outputs
    assert (y.onnx_name, z.onnx_name) == ("y", "z") and verify(artifact, samples, references).status == "passed"  # control

    missing = verify(dataclasses.replace(artifact, outputs=[y]), samples, references)  # z would go unchecked
    assert missing.status == "failed" and "the model's output(s) 'z' have no counterpart in the artifact" in missing.reason
    extra = verify(artifact, samples, [{"y": r["y"]} for r in references])  # the artifact has an output the model has not
    assert extra.status == "failed" and "the artifact has output(s) 'z' that the model does not have" in extra.reason
    renamed = verify(dataclasses.replace(artifact, outputs=[y, dataclasses.replace(z, artifact_name="out9")]), samples, references)
    assert renamed.status == "failed" and "out9" in renamed.reason
    swapped = verify(dataclasses.replace(artifact, outputs=[dataclasses.replace(y, onnx_name="z"), dataclasses.replace(z, onnx_name="y")]),
                     samples, references)
    assert swapped.status == "failed" and "SQNR" in swapped.reason
