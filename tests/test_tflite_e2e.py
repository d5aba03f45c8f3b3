"""Whole pipeline, TFLite backend, on the three generated models in every precision (real onnx2tf, TF, LiteRT)."""

import json

import pytest

import edgekit
from tests.conftest import calibration_for

MODELS = ["cnn", "superres", "transformer"]
PRECISIONS = ["fp32", "fp16", "dynamic", "int8"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model_fixture", MODELS)
def test_build_and_verify(model_fixture, precision, request, tmp_path):
    model = request.getfixturevalue(model_fixture)
    calib = calibration_for(model, tmp_path) if precision == "int8" else None
    out = tmp_path / "out"
    report = edgekit.build(model, "android", precision=precision, calib=calib, out_dir=out)

    assert report.verification.status == "passed", report.verification.reason
    assert report.verification.where == "host" and report.verification.runtime.startswith("ai_edge_litert")
    artifact = out / report.artifact
    assert artifact.is_file() and artifact.suffix == ".tflite" and artifact.stat().st_size == report.artifact_bytes
    assert [s.name for s in report.stages] == ["load", "simplify", "convert", "quantize", "verify"]
    convert = next(s for s in report.stages if s.name == "convert")
    assert convert.tool == "onnx2tf" and convert.tool_version
    for output in report.verification.outputs:
        assert output.finite and output.passed
        assert output.sqnr_db >= report.verification.tolerances["min_sqnr_db"]
    assert report.verification.latency_ms.runs > 0 and report.verification.latency_ms.p50 > 0
    on_disk = json.loads((out / "edgekit-report.json").read_text())
    assert on_disk["artifact_sha256"] == report.artifact_sha256 and on_disk["precision"] == precision
    assert on_disk["verification"]["input_source"].startswith("held-out:" if calib else "random(")
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "work files left behind"


@pytest.mark.slow
def test_layout_bindings_recorded(superres, transformer, tmp_path):
    report = edgekit.build(superres, "arm", precision="fp32", out_dir=tmp_path / "sr")
    assert report.io["inputs"][0].perm == (0, 2, 3, 1)  # NCHW -> NHWC for the phone
    assert report.io["outputs"][0].perm == (0, 2, 3, 1)
    report = edgekit.build(transformer, "arm", precision="fp32", out_dir=tmp_path / "tf")
    assert report.io["inputs"][0].perm is None  # token inputs keep their ONNX layout


@pytest.mark.slow
def test_int8_io_profile_option(superres, tmp_path):
    profile = tmp_path / "int8io.toml"
    profile.write_text('name = "int8io"\nbackend = "tflite"\nprecisions = ["int8"]\ndefault_precision = "int8"\n'
                       '[backend_options]\nint8_io = "int8"\n')
    report = edgekit.build(superres, str(profile), calib=calibration_for(superres, tmp_path), out_dir=tmp_path / "o")
    assert report.verification.status == "passed", report.verification.reason


@pytest.mark.slow
@pytest.mark.parametrize("model_fixture", ["cnn", "transformer"])
def test_graph_route_builds_and_verifies(model_fixture, request, tmp_path):
    """float_route = "graph": onnx2tf's float files come from the frozen graph, not the Keras model (the route
    big models take by default, too big to test here); without a SignatureDef, I/O is read from tensor details."""
    model = request.getfixturevalue(model_fixture)
    profile = tmp_path / "graph.toml"
    profile.write_text('name = "graph"\nbackend = "tflite"\nprecisions = ["fp32", "int8"]\ndefault_precision = "fp32"\n'
                       '[backend_options]\nfloat_route = "graph"\n')
    for precision in ("fp32", "int8"):
        calib = calibration_for(model, tmp_path) if precision == "int8" else None
        report = edgekit.build(model, str(profile), precision=precision, calib=calib, out_dir=tmp_path / precision)
        assert report.verification.status == "passed", (precision, report.verification.reason)
        convert = next(s for s in report.stages if s.name == "convert")
        assert convert.detail["float_route"] == "graph"
        if precision == "fp32":
            io = next(s.detail["tflite_io"] for s in report.stages if "tflite_io" in s.detail)
            assert io["source"] == "tensor_details"


def test_float_route_is_checked_when_the_profile_loads(tmp_path):
    profile = tmp_path / "bad.toml"
    profile.write_text('name = "bad"\nbackend = "tflite"\n[backend_options]\nfloat_route = "frozen"\n')
    with pytest.raises(edgekit.errors.ProfileError, match="float_route"):
        edgekit.build(tmp_path / "missing.onnx", str(profile), out_dir=tmp_path / "o")
