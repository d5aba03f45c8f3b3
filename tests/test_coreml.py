"""Core ML backend: real conversions of the generated models (onnx2torch, torch.export, coremltools),
packages read back from disk with coremltools, the runner's macOS-only runtime, and the CLI path.

Core ML prediction needs macOS; those tests are marked ``macos`` and skipped elsewhere."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from edgekit.backends import registered
from edgekit.cli import cli as cli_main
from edgekit.errors import BackendUnavailable, CalibrationError, ProfileError, StageError
from edgekit.pipeline import build
from edgekit.profiles import Preprocessing, resolve_target
from tests.conftest import calibration_for, remote_command

pytest.importorskip("coremltools")
pytest.importorskip("onnx2torch")

ON_MACOS = sys.platform == "darwin"
needs_macos = pytest.mark.skipif(not ON_MACOS, reason="Core ML prediction needs macOS (coremltools.libcoremlpython exists only there)")

EXPECTED_IO = {
    "tiny_cnn": (("image", [1, 3, 64, 64]), ("logits", [1, 10])),
    "super_resolution": (("low_res", [1, 1, 32, 32]), ("high_res", [1, 1, 96, 96])),
    "transformer_block": (("tokens", [1, 16, 64]), ("features", [1, 16, 64])),
}


def describe(report) -> dict:
    from edgekit.backends.coreml import describe_package

    return describe_package(report.report_path.parent / report.artifact)


def stage(report, name: str) -> dict:
    return next(s for s in report.stages if s.name == name).detail


@pytest.fixture(scope="module")
def ios():
    return resolve_target("ios")


def with_options(profile, **options):
    return dataclasses.replace(profile, backend_options={**profile.backend_options, **options})


# --- registry and profiles ---------------------------------------------------------------------


def test_registered_and_profiles():
    assert "coreml" in registered()
    ios, ane = resolve_target("ios"), resolve_target("ios-ane")
    assert ios.note is None and ios.backend == ane.backend == "coreml"
    assert ios.hardware == {"minimum_deployment_target": "iOS16", "compute_units": "ALL"}
    assert ane.hardware["compute_units"] == "CPU_AND_NE" and "fp32" not in ane.precisions
    assert resolve_target("iphone").name == "ios"


@pytest.mark.parametrize(("options", "hardware", "message"), [
    ({"int8_weights": "kmeans"}, {}, "backend_options.int8_weights': must be one of linear, palettize"),
    ({"palettize_bits": 5}, {}, "backend_options.palettize_bits': must be one of 4, 6, 8"),
    ({"image_inputs": True}, {}, "unknown Core ML option"),
    ({}, {"minimum_deployment_target": "iOS14"}, "ML Program packages need iOS15 or newer"),
    ({}, {"compute_units": "NE"}, "must be one of ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE"),
    ({"int8_activations": True}, {}, "int8 activations need iOS17+"),
])
def test_bad_options_name_the_key(ios, options, hardware, message):
    from edgekit.backends.coreml import CoreMLOptions

    profile = dataclasses.replace(ios, backend_options={**ios.backend_options, **options}, hardware={**ios.hardware, **hardware})
    with pytest.raises(ProfileError) as info:
        CoreMLOptions.from_profile(profile)
    assert message in str(info.value) and "ios.toml" in str(info.value)


def test_coreml_names_are_identifiers_and_unique():
    from edgekit.backends.coreml import coreml_name

    taken: set[str] = set()
    assert [coreml_name(n, taken) for n in ("input.1", "input:1", "0", "ok")] == ["input_1", "input_1_2", "t_0", "ok"]


# --- conversions -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_cnn", "super_resolution", "transformer_block"])
def test_converts_in_every_precision(model, sample_dir, tmp_path, ios):
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        report = build(sample_dir / f"{model}.onnx", ios, precision=precision, out_dir=tmp_path / precision)
        package = report.report_path.parent / report.artifact
        assert package.is_dir() and package.suffix == ".mlpackage"
        info = describe(report)
        (in_name, in_shape), (out_name, out_shape) = EXPECTED_IO[model]
        assert info["inputs"] == [{"name": in_name, "type": "multiarray", "shape": in_shape, "dtype": "FLOAT32"}]
        assert info["outputs"] == [{"name": out_name, "type": "multiarray", "shape": out_shape, "dtype": "FLOAT32"}]
        assert info["compute_precision"] == ("fp32" if precision == "fp32" else "fp16")
        if precision == "int8":
            assert "constexpr_affine_dequantize" in info["weight_compression"] and not info["activation_quantization"]
            assert stage(report, "quantize")["compressed_ops"] >= 1
        else:
            assert info["weight_compression"] == []
        meta = info["metadata"]
        assert meta["author"] == "edgekit" and meta["version"] == "1"
        assert meta["edgekit.source_sha256"] == report.source_model_sha256
        assert meta["edgekit.version"] and meta["edgekit.precision"] == precision and meta["edgekit.target"] == "ios"
        # Linux cannot run Core ML: verification says so, and the intermediate check carries the numbers.
        assert report.verification.status == "skipped" and "Core ML prediction needs macOS" in report.verification.reason
        check = stage(report, "convert")["intermediate_check"]
        assert check["passed"] and [c["step"] for c in check["checks"]] == ["onnx2torch", "torch.export"]
        assert all(o["sqnr_db"] > 60 and o["cosine"] > 0.99999 for c in check["checks"] for o in c["outputs"])
        assert stage(report, "quantize")["package_bytes"] == report.artifact_bytes
        sizes[precision] = report.artifact_bytes
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


@pytest.mark.slow
def test_int8_needs_no_calibration_but_int8_activations_do(cnn, tmp_path):
    ane = resolve_target("ios-ane")
    report = build(cnn, ane, precision="int8", out_dir=tmp_path / "w8")  # int8 weights: no --calib
    assert describe(report)["weight_compression"] == ["constexpr_affine_dequantize"]
    w8a8 = with_options(ane, int8_activations=True)
    with pytest.raises(CalibrationError, match="int8 quantization needs calibration data"):
        build(cnn, w8a8, precision="int8", out_dir=tmp_path / "a8")
    if not ON_MACOS:
        with pytest.raises(BackendUnavailable) as info:
            build(cnn, w8a8, precision="int8", calib=calibration_for(cnn, tmp_path), out_dir=tmp_path / "a8")
        assert "coremltools calibrates activations by running the model, which needs macOS" in str(info.value)
        assert "int8_activations = false" in str(info.value)


@pytest.mark.slow
def test_palettized_image_input_package(cnn, tmp_path, ios):
    profile = dataclasses.replace(with_options(ios, int8_weights="palettize", palettize_bits=4, image_input=True),
                                  preprocessing=Preprocessing(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), color="BGR"))
    report = build(cnn, profile, precision="int8", out_dir=tmp_path)
    info = describe(report)
    assert info["inputs"] == [{"name": "image", "type": "image", "shape": [64, 64], "color": "BGR"}]
    assert info["weight_compression"] == ["constexpr_lut_to_dense"]
    assert info["metadata"]["edgekit.weights"] == "palettized 4-bit (k-means lookup table)"
    image = json.loads(info["metadata"]["edgekit.image_inputs"])["image"]
    assert image["color"] == "BGR" and image["scale"] == pytest.approx(4 / 255) and image["bias"] == pytest.approx([-2.0] * 3)
    fp16 = build(cnn, ios, precision="fp16", out_dir=tmp_path / "fp16")
    assert report.artifact_bytes < fp16.artifact_bytes / 2


@pytest.mark.slow
def test_image_input_needs_one_scale(cnn, tmp_path, ios):
    # The shipped profile has ImageNet std (0.229, 0.224, 0.225): Core ML images have one scale for all channels.
    with pytest.raises(ProfileError) as info:
        build(cnn, with_options(ios, image_input=True), precision="fp16", out_dir=tmp_path)
    assert "one scale for all channels" in str(info.value) and "image_input = false" in str(info.value)


# --- what blocks the route ---------------------------------------------------------------------


def unsupported_model(path: Path) -> Path:
    """Trilu and Hardmax run in onnxruntime but onnx2torch 1.5 has no converter for them."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu_in"),
             helper.make_node("Trilu", ["r"], ["t"], name="upper_triangle", upper=1),
             helper.make_node("Hardmax", ["t"], ["y"], name="pick_max", axis=-1)]
    graph = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_unsupported_ops_fail_naming_op_and_node(tmp_path, ios):
    model = unsupported_model(tmp_path / "blocked.onnx")
    with pytest.raises(StageError) as info:
        build(model, ios, precision="fp16", out_dir=tmp_path / "out")
    message = str(info.value)
    assert "the coreml backend cannot convert these ops" in message
    assert "Trilu (nodes: upper_triangle)" in message and "Hardmax (nodes: pick_max)" in message
    assert "onnx2torch has no converter" in message and "Relu" not in message
    assert not list((tmp_path / "out").glob("*.mlpackage"))


def test_onnx2torch_not_implemented_is_mapped(tmp_path):
    from edgekit.backends.coreml.torch_leg import to_torch

    with pytest.raises(StageError, match=r"onnx2torch cannot convert ONNX op Trilu \(nodes: upper_triangle\)"):
        to_torch(onnx.load(str(unsupported_model(tmp_path / "blocked.onnx"))))


def test_intermediate_check_fails_on_differing_numbers(cnn, sample_dir):
    """A PyTorch module that differs from the ONNX model (here: other weights) fails the check with its numbers."""
    from edgekit.backends.coreml import torch_leg as leg
    from edgekit.calibration import random_samples
    from edgekit.modelio import load_model
    from edgekit.reference import run_reference
    from edgekit.samples import tiny_cnn

    loaded = load_model(cnn)
    samples = random_samples(loaded.inputs, 2, seed=0)
    references = run_reference(loaded.proto, samples)
    tolerance = resolve_target("ios").tolerance_for("fp32")
    good = leg.check_against_reference("onnx2torch", leg.to_torch(loaded.proto), ["image"], ["logits"], samples, references, tolerance)
    assert good.passed and good.outputs[0].sqnr_db > 60
    other = leg.to_torch(tiny_cnn(seed=5))
    bad = leg.check_against_reference("onnx2torch", other, ["image"], ["logits"], samples, references, tolerance)
    assert not bad.passed
    with pytest.raises(StageError) as info:
        leg.require_passed(bad, tolerance)
    assert "onnx2torch PyTorch module does not match onnxruntime" in str(info.value)
    assert "output 'logits'" in str(info.value) and "SQNR" in str(info.value)


# --- the device runner ---------------------------------------------------------------------------


def test_runner_says_coreml_needs_macos(tmp_path):
    if ON_MACOS:
        pytest.skip("this host is macOS: the runtime exists here")
    (tmp_path / "io.json").write_text(json.dumps({"runtime": "coreml", "inputs": ["x"], "outputs": ["y"], "options": {}, "samples": 1}))
    np.savez(tmp_path / "in.npz", s0_i0=np.zeros((1, 3), np.float32))
    result = subprocess.run([*remote_command(tmp_path), "run", "--artifact", "m.mlpackage", "--io", "io.json", "--inputs", "in.npz",
                             "--outputs", "out.npz", "--timings", "t.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    error = json.loads(result.stderr.strip().splitlines()[-1].split(" ", 1)[1])
    assert error["kind"] == "runtime_missing" and "Core ML prediction needs macOS" in error["message"]


@pytest.mark.macos
@needs_macos
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_prediction_on_macos_passes(superres, tmp_path, ios, precision):
    report = build(superres, ios, precision=precision, out_dir=tmp_path)
    assert report.verification.status == "passed", report.verification.reason
    assert report.verification.runtime.startswith("coremltools") and report.verification.latency_ms.runs > 0


# --- the CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_build_ios_ends_skipped_with_exit_0(superres, tmp_path):
    """Verification that cannot run is not a failure: exit 0, but the summary and report say 'skipped' and why."""
    result = CliRunner().invoke(cli_main, ["build", str(superres), "--target", "ios", "--precision", "int8", "--out", str(tmp_path)])
    assert result.exit_code == (0 if not ON_MACOS else result.exit_code), result.output
    report = json.loads((tmp_path / "edgekit-report.json").read_text())
    assert report["backend"] == "coreml" and report["artifact"] == "super_resolution_int8.mlpackage"
    assert (tmp_path / report["artifact"]).is_dir() and report["artifact_bytes"] > 0
    if not ON_MACOS:
        assert "skipped" in result.output and "Core ML prediction needs macOS" in result.output
        assert report["verification"]["status"] == "skipped" and "needs macOS" in report["verification"]["reason"]
    convert = next(s for s in report["stages"] if s["name"] == "convert")
    assert convert["detail"]["intermediate_check"]["passed"] is True
    assert convert["detail"]["route"].startswith("onnx2torch")


def test_rank2_prelu_is_rewritten_exactly_for_coremltools():
    """coremltools' prelu takes ranks 3-5; the zoo's MTCNN R-Net/O-Net have a per-channel PReLU after a Gemm."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.backends.coreml.onnx_fixes import prelu_as_relus

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1), helper.make_node("PRelu", ["h", "slope"], ["y"], name="/prelu5/PRelu"),
         helper.make_node("PRelu", ["x4", "slope4"], ["y4"], name="conv_prelu")],
        "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]), helper.make_tensor_value_info("x4", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5]), helper.make_tensor_value_info("y4", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "w"), numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
         numpy_helper.from_array(rng.uniform(0.1, 0.5, 5).astype(np.float32), "slope"),
         numpy_helper.from_array(rng.uniform(0.1, 0.5, (3, 1, 1)).astype(np.float32), "slope4")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    fixed, rewritten = prelu_as_relus(model)
    assert rewritten == ["/prelu5/PRelu"]  # the rank-4 PReLU is left to coremltools
    assert [n.op_type for n in fixed.graph.node].count("PRelu") == 1
    onnx.checker.check_model(fixed)
    feed = {"x": rng.standard_normal((2, 6)).astype(np.float32), "x4": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)

    for before, after in zip(run(model), run(fixed), strict=True):
        np.testing.assert_array_equal(before, after)
    assert prelu_as_relus(onnx.ModelProto())[1] == []


def _pool_model(path: Path, dropout: bool, pads: list[int]) -> Path:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["p"], name="odd_pool", kernel_shape=[2, 2], pads=pads)]
    if dropout:
        nodes.append(helper.make_node("Dropout", ["p"], ["y"], name="drop"))
    else:
        nodes.append(helper.make_node("Identity", ["p"], ["y"], name="same"))
    out = 8 + pads[0] + pads[2] - 1
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, out, out])],
                              [onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def test_inference_dropout_is_not_refused(tmp_path, ios):
    """onnx2torch has no Dropout converter at old opsets, but an inference Dropout becomes an Identity first: no refusal at load."""
    report = build(_pool_model(tmp_path / "drop.onnx", dropout=True, pads=[0, 0, 0, 0]), ios, precision="fp16", out_dir=tmp_path / "out")
    assert report.verification.status == "skipped" and "macOS" in report.verification.reason  # built; Linux cannot run it
    assert list((tmp_path / "out").glob("*.mlpackage"))


def test_asymmetric_average_pool_is_refused_at_load(tmp_path, ios):
    with pytest.raises(StageError) as info:
        build(_pool_model(tmp_path / "pool.onnx", dropout=False, pads=[0, 0, 1, 1]), ios, precision="fp16", out_dir=tmp_path / "out")
    assert "AveragePool with unequal begin/end pads (odd_pool)" in str(info.value) and "stage 'load' failed" in str(info.value)


def test_inference_dropout_becomes_identity_before_onnx2torch(tmp_path):
    """Old-opset Dropout before a Gemm (AlexNet's classifier): onnx2torch has no converter at opset 9 and a broken
    one at 13 (the Gemm got a 0-d tensor); as an Identity the module runs and matches onnxruntime."""
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    from edgekit.backends.coreml.onnx_fixes import dropout_as_identity
    from edgekit.backends.coreml.torch_leg import blocking_nodes, to_torch

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc6", transB=1), helper.make_node("Relu", ["h"], ["r"], name="relu6"),
         helper.make_node("Dropout", ["r"], ["d", "mask"], name="drop6"), helper.make_node("Gemm", ["d", "w2"], ["y"], name="fc7", transB=1)],
        "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"), numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    fixed, rewritten = dropout_as_identity(model)
    assert rewritten == ["drop6"] and "Dropout" not in blocking_nodes(model)
    old_opset = onnx.ModelProto()
    old_opset.CopyFrom(model)
    old_opset.opset_import[0].version = 9  # onnx2torch has no Dropout converter below opset 10 (the light models)
    assert "Dropout" not in blocking_nodes(old_opset)
    with_mask = onnx.ModelProto()
    with_mask.CopyFrom(old_opset)
    with_mask.graph.output.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 8]))
    assert blocking_nodes(with_mask)["Dropout"] == ["drop6"]  # a Dropout whose mask is read is not the identity
    x = rng.standard_normal((1, 16)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0], expected)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(model)(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
