"""ncnn backend end to end: real pnnx, the real ncnn runtime, onnxruntime as the reference.

Also the failure paths a user meets: a model pnnx cannot convert (its log tail in the error), a
model pnnx converts into layers ncnn cannot run, inspect flagging such ops before any conversion,
and batched inputs that ncnn Mats cannot hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.backends import ConvertContext, get_backend
from edgekit.cli import cli
from edgekit.errors import CalibrationError, OptionsError, StageError
from edgekit.modelio import load_model
from edgekit.profiles import resolve_target
from tests.conftest import calibration_for

MODELS = ["cnn", "superres", "transformer"]
PRECISIONS = ["fp32", "fp16", "int8"]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _if_model(path: Path) -> Path:
    """A constant-condition If: pnnx 20261020 exits non-zero on it (measured)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    then_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph([node], "if", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(True), "c")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _topk_model(path: Path) -> Path:
    """pnnx converts TopK 'successfully' into a TopK layer the ncnn runtime does not have."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    relu = helper.make_node("Relu", ["x"], ["r"])
    topk = helper.make_node("TopK", ["r", "k"], ["values", "indices"], axis=-1)
    graph = helper.make_graph([relu, topk], "topk", [x],
                              [helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 4, 8, 3]),
                               helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 4, 8, 3])],
                              [numpy_helper.from_array(np.array([3], np.int64), "k")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _context(model: Path, work: Path, precision: str = "fp32") -> ConvertContext:
    loaded = load_model(model)
    work.mkdir(parents=True, exist_ok=True)
    return ConvertContext(model_path=model, model=loaded.proto, inputs=loaded.inputs, outputs=loaded.outputs,
                          profile=resolve_target("android-ncnn"), precision=precision, calibration=None,
                          work_dir=work, artifact_stem=model.stem)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model_fixture", MODELS)
def test_build_and_verify_with_ncnn_runtime(model_fixture, precision, request, tmp_path):
    model = request.getfixturevalue(model_fixture)
    calib = calibration_for(model, tmp_path, count=24) if precision == "int8" else None
    out = tmp_path / "out"
    report = edgekit.build(model, "android-ncnn", precision=precision, calib=calib, out_dir=out)

    verification = report.verification
    assert verification.status == "passed", verification.reason
    assert verification.where == "host" and verification.runtime.startswith("ncnn ")
    for output in verification.outputs:
        assert output.finite and output.passed
        assert output.sqnr_db >= verification.tolerances["min_sqnr_db"] and output.cosine >= verification.tolerances["min_cosine"]
        if precision == "fp32":
            assert output.sqnr_db > 80  # fp32 ncnn matches onnxruntime to float rounding
        if precision == "int8":
            assert output.sqnr_db < 60  # the weights really are int8: not a float model under an int8 name
    assert verification.latency_ms.runs > 0 and verification.latency_ms.p50 > 0

    param, weights = out / report.artifact, out / f"{Path(report.artifact).stem}.bin"
    assert param.suffix == ".param" and param.read_text().startswith("7767517")
    assert report.artifact_files[:2] == [param.name, weights.name] and weights.is_file()
    assert report.artifact_bytes >= param.stat().st_size + weights.stat().st_size
    assert [(b.artifact_name, b.squeeze_batch) for b in report.io["inputs"]] == [("in0", True)]
    assert [(b.artifact_name, b.squeeze_batch) for b in report.io["outputs"]] == [("out0", True)]

    stages = {s.name: s for s in report.stages}
    assert stages["convert"].tool == "pnnx" and stages["convert"].detail["fp16_weights"] == (precision == "fp16")
    options = stages["convert"].detail["ncnn_options"]
    assert options["use_fp16_storage"] is (precision == "fp16") and options["use_fp16_arithmetic"] is (precision == "fp16")
    assert verification.environment["ncnn_options"] == options  # what the runtime really ran with
    assert verification.environment["vulkan"] is False  # no Vulkan driver on this host; the report says so

    on_disk = json.loads((out / "edgekit-report.json").read_text())
    assert on_disk["backend"] == "ncnn" and on_disk["precision"] == precision and on_disk["verification"]["status"] == "passed"
    if precision == "int8":
        assert stages["quantize"].detail["method"] == "kl" and stages["quantize"].detail["quantized_layers"] > 0
        if model_fixture == "transformer":  # Gemm layers: int8 weights, inputs quantized by ncnn at run time
            assert "18=2" in param.read_text() and len(report.artifact_files) == 2
        else:  # Convolution/InnerProduct: int8 weights and KL-calibrated input scales, table shipped
            table = out / report.artifact_files[2]
            assert table.suffix == ".table" and "_param_0 " in table.read_text()
            assert "8=2" in param.read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "work files left behind"


def test_fp16_weights_are_half_the_size(cnn, tmp_path):
    sizes = {}
    for precision in ("fp32", "fp16"):
        report = edgekit.build(cnn, "arm-ncnn", precision=precision, out_dir=tmp_path / precision)
        sizes[precision] = (tmp_path / precision / report.artifact_files[1]).stat().st_size
    assert sizes["fp16"] < 0.55 * sizes["fp32"]


def test_int8_without_calibration_is_refused(cnn, tmp_path):
    with pytest.raises(CalibrationError, match="needs calibration data"):
        edgekit.build(cnn, "android-ncnn", precision="int8", out_dir=tmp_path)


def test_pnnx_failure_carries_its_log_tail(tmp_path):
    backend = get_backend("ncnn")
    ctx = _context(_if_model(tmp_path / "branchy.onnx"), tmp_path / "work")
    with pytest.raises(StageError) as caught:
        backend.convert(ctx)
    message = str(caught.value)
    # pnnx 20261020 segfaults on it (a wrapper script would report exit 245): either way a StageError
    assert message.startswith(("convert: pnnx failed (exit", "convert: pnnx was killed by signal")) and "Log tail:" in message
    assert "ort CreateSession failed" in message  # pnnx's own last words, not a paraphrase
    assert "\x1b[" not in message  # terminal colour codes stripped
    assert (tmp_path / "work" / "pnnx" / "pnnx.log").is_file()


def test_layers_ncnn_cannot_run_are_caught_after_pnnx(tmp_path):
    backend = get_backend("ncnn")
    ctx = _context(_topk_model(tmp_path / "topk.onnx"), tmp_path / "work")
    with pytest.raises(StageError, match="does not implement: TopK"):
        backend.convert(ctx)


def test_inspect_flags_ops_before_conversion(tmp_path):
    model = _topk_model(tmp_path / "topk.onnx")
    result = CliRunner().invoke(cli, ["inspect", str(model), "--target", "android-ncnn", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["backend"] == "ncnn" and len(info["unsupported"]) == 1
    assert info["unsupported"][0].startswith("TopK (") and "ncnn runtime does not implement" in info["unsupported"][0]
    clean = CliRunner().invoke(cli, ["inspect", str(_if_model(tmp_path / "if.onnx")), "--target", "arm-ncnn"])
    assert "If" in clean.output and "pnnx fails on ONNX If" in clean.output


def test_build_stops_at_load_for_flagged_ops(tmp_path):
    model = _topk_model(tmp_path / "topk.onnx")
    completed = subprocess.run([sys.executable, "-m", "edgekit.cli", "build", str(model), "--target", "android-ncnn",
                                "--precision", "fp32", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 4, completed.stderr
    assert "the ncnn backend cannot convert these ops" in completed.stderr and "TopK" in completed.stderr
    assert "stage 'load' failed" in completed.stderr


def test_batched_input_is_refused_with_a_fix(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 8, 8])])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "batch2.onnx")
    with pytest.raises(OptionsError, match="one sample at a time") as caught:
        edgekit.build(model, "android-ncnn", precision="fp32", out_dir=tmp_path / "out")
    assert "--input-shape x=1" in str(caught.value)


def test_profiles_resolve():
    android, arm = resolve_target("android-ncnn"), resolve_target("arm-ncnn")
    assert android.backend == arm.backend == "ncnn"
    assert android.default_precision == "fp16" and set(android.precisions) == {"fp32", "fp16", "int8"}
    assert resolve_target("ncnn").name == "android-ncnn"
    assert android.backend_options["vulkan"] is True and arm.backend_options["vulkan"] is False


@pytest.mark.parametrize("steps_from", ["initializer", "constant-node"])
def test_strided_slice_is_refused_at_load_naming_the_node(tmp_path, steps_from):
    """YOLOX's Focus stem (x[..., ::2, ::2]): ncnn has no strided slice, so the build stops at load naming the node,
    whether ``steps`` is an initializer or a Constant node's value."""
    consts = {"starts": [0], "ends": [8], "axes": [3], "steps": [2]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items() if k != "steps" or steps_from == "initializer"]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"], name="focus_slice")]
    if steps_from == "constant-node":
        nodes.insert(0, helper.make_node("Constant", [], ["steps"], value=numpy_helper.from_array(np.array([2], np.int64))))
    graph = helper.make_graph(nodes, "focus", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 4])], inits)
    model = tmp_path / "focus.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(model))
    with pytest.raises(StageError) as info:
        edgekit.build(model, "arm-ncnn", precision="fp32", out_dir=tmp_path / "out")
    assert "Slice with steps other than 1 (focus_slice)" in str(info.value) and "stage 'load' failed" in str(info.value)
