"""Outputs that could fool a comparison, and artifacts that could crash a runtime."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekit
import edgekit.profiles
from edgekit.calibration import random_samples
from edgekit.modelio import load_model
from edgekit.reference import run_reference
from edgekit.transport.local import LocalTransport
from edgekit.types import Artifact
from edgekit.verify import verify_artifact


def elementwise_model(path, *ops: str):
    nodes, previous = [], "x"
    for i, op in enumerate(ops):
        out = "y" if i == len(ops) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [previous], [out], name=f"{op.lower()}_{i}"))
        previous = out
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.slow
def test_nan_reference_never_passes(tmp_path):
    model = elementwise_model(tmp_path / "log.onnx", "Log")  # log of negative normal samples is NaN
    report = edgekit.build(model, "arm", precision="fp32", out_dir=tmp_path / "out")
    assert report.verification.status == "failed"
    assert "reference (onnxruntime) output has NaN/Inf" in report.verification.reason
    data = json.loads((tmp_path / "out" / "edgekit-report.json").read_text())  # strict JSON: NaN written as text
    assert data["verification"]["outputs"][0]["sqnr_db"] == "nan" and data["verification"]["outputs"][0]["passed"] is False


@pytest.mark.slow
def test_all_zero_output_has_defined_metrics(tmp_path):
    model = elementwise_model(tmp_path / "zero.onnx", "Abs", "Neg", "Relu")  # always exactly 0
    report = edgekit.build(model, "arm", precision="fp32", out_dir=tmp_path / "out")
    output = report.verification.outputs[0]
    assert report.verification.status == "passed" and output.max_abs_error == 0.0 and output.max_rel_error == 0.0
    data = json.loads((tmp_path / "out" / "edgekit-report.json").read_text())
    assert data["verification"]["outputs"][0]["sqnr_db"] == "inf"


@pytest.fixture(scope="module")
def good_tflite(tmp_path_factory, superres):
    out = tmp_path_factory.mktemp("good")
    report = edgekit.build(superres, "arm", precision="fp32", out_dir=out)
    return out / report.artifact, report


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_broken_tflite_fails_verification_cleanly(good_tflite, superres, tmp_path, damage):
    """The runtime runs in a subprocess: a crash or a load error becomes a failed verification, not a dead edgekit."""
    source, report = good_tflite
    broken = tmp_path / source.name
    data = source.read_bytes()
    broken.write_bytes({"truncate": data[: len(data) // 3], "garbage": bytes(range(256)) * 64, "empty": b""}[damage])
    artifact = Artifact(path=broken, backend="tflite", precision="fp32", runtime="tflite",
                        inputs=report.io["inputs"], outputs=report.io["outputs"])
    loaded = load_model(superres)
    samples = random_samples(loaded.inputs, 2, seed=0)
    profile_tolerance = edgekit.profiles.resolve_target("arm").tolerance_for("fp32")
    result = verify_artifact(artifact, samples, run_reference(loaded.proto, samples), profile_tolerance, LocalTransport(),
                             warmup=0, runs=1)
    assert result.status == "failed"
    assert "the runtime failed on this host" in result.reason


def reweighted(model, folder):
    """The same network (same inputs, outputs and shapes) with its weights shuffled within each tensor: another model its
    artifact could be mistaken for, with every value still plausible (BatchNorm variances stay positive)."""
    proto = onnx.load(str(model))
    rng = np.random.default_rng(5)
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size > 1:
            tensor.CopyFrom(numpy_helper.from_array(rng.permutation(array.ravel()).reshape(array.shape), tensor.name))
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(folder / model.name))
    return folder / model.name


@pytest.mark.slow
def test_wrong_model_artifact_fails(cnn, tmp_path):
    """A good artifact of another model (right runtime, same I/O, other weights) cannot pass against this model's reference."""
    from edgekit.backends import get_backend

    other = edgekit.build(reweighted(cnn, tmp_path / "other"), "arm-ncnn", precision="fp32", out_dir=tmp_path / "theirs")
    assert other.verification.status == "passed"  # it is a faithful artifact of its own model
    folder = tmp_path / "theirs"
    artifact = Artifact(path=folder / other.artifact, backend="ncnn", precision="fp32", runtime="ncnn", inputs=other.io["inputs"],
                        outputs=other.io["outputs"], extra_files=[folder / name for name in other.artifact_files[1:]])
    loaded = load_model(cnn)
    samples = random_samples(loaded.inputs, 2, seed=0)
    profile = edgekit.profiles.resolve_target("arm-ncnn")
    result = verify_artifact(artifact, samples, run_reference(loaded.proto, samples), profile.tolerance_for("fp32"), LocalTransport(),
                             warmup=0, runs=1, options=get_backend("ncnn").runner_options(artifact, profile))
    assert result.status == "failed" and "SQNR" in result.reason and "cosine" in result.reason


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated-bin", "garbage-param"])
def test_broken_ncnn_model_fails_verification_cleanly(superres, tmp_path, damage):
    """ncnn can segfault on odd inputs: the runner's subprocess turns that into a failed verification."""
    from edgekit.backends import get_backend

    report = edgekit.build(superres, "arm-ncnn", precision="fp32", out_dir=tmp_path / "good")
    param = tmp_path / "good" / report.artifact
    weights = tmp_path / "good" / report.artifact_files[1]
    if damage == "truncated-bin":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        param.write_bytes(b"7767517\n3 3\nInput in0 0 1 in0\n" + bytes(range(200)))
    artifact = Artifact(path=param, backend="ncnn", precision="fp32", runtime="ncnn",
                        inputs=report.io["inputs"], outputs=report.io["outputs"], extra_files=[weights])
    loaded = load_model(superres)
    samples = random_samples(loaded.inputs, 2, seed=0)
    profile = edgekit.profiles.resolve_target("arm-ncnn")
    result = verify_artifact(artifact, samples, run_reference(loaded.proto, samples), profile.tolerance_for("fp32"), LocalTransport(),
                             warmup=0, runs=1, options=get_backend("ncnn").runner_options(artifact, profile))
    assert result.status == "failed"
    assert "the runtime failed on this host" in result.reason
