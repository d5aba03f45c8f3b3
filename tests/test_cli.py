"""The CLI the way a user drives it: a real subprocess for builds, CliRunner for the quick commands."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_help_reads_well():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("build", "inspect", "targets"):
        assert command in result.output
    build_help = CliRunner().invoke(cli, ["build", "--help"]).output
    assert "--precision" in build_help and "--calib" in build_help and "Exit codes" in build_help


def test_targets_list_and_show():
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "android" in lines and "arm" in lines and "tflite" in lines["android"]
    shown = CliRunner().invoke(cli, ["targets", "show", "android"])
    profile = json.loads(shown.output)
    assert profile["backend"] == "tflite" and profile["tolerances"]["int8"]["min_sqnr_db"] > 0
    unknown = CliRunner().invoke(cli, ["targets", "show", "andriod"])
    assert unknown.exit_code == 3 and "did you mean 'android'" in unknown.output


def test_inspect(cnn):
    result = CliRunner().invoke(cli, ["inspect", str(cnn), "--target", "android", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["inputs"][0]["shape"] == [1, 3, 64, 64] and info["opset"] == 17
    assert info["ops"]["Conv"] == 3 and info["parameters"] > 1000 and info["unsupported"] == []
    human = CliRunner().invoke(cli, ["inspect", str(cnn), "--target", "android"])
    assert "no ops known to block" in human.output


def test_inspect_flags_unsupported_ops(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph([helper.make_node("Identity", ["x_in"], ["x_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
                             [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])])
    body.node.insert(0, helper.make_node("Identity", ["c"], ["c_out"]))
    body.output[0].name = "c_out"
    loop = helper.make_node("Loop", ["n", "", "x"], ["y"], name="my_loop", body=body)
    graph = helper.make_graph([loop], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [helper.make_tensor("n", TensorProto.INT64, [], [3])])
    path = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    info = json.loads(CliRunner().invoke(cli, ["inspect", str(path), "--target", "android", "--json"]).output)
    assert info["unsupported"] and "Loop (my_loop)" in info["unsupported"][0]
    result = run_cli("build", str(path), "--target", "android", "--precision", "fp32", "-o", str(tmp_path / "o"))
    assert result.returncode == 4 and "cannot convert these ops" in result.stderr and "Loop" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["build", "missing.onnx", "--target", "android", "--precision", "fp32"], 3, "no such file"),
        (["build", "{model}", "--target", "nope"], 3, "unknown target 'nope'"),
        (["build", "{model}", "--target", "android"], 3, "int8 quantization needs calibration data"),
        (["build", "{model}", "--target", "jetson"], 3, "must be built on the GPU that will run it"),
        (["build", "{model}", "--target", "arm", "--input-shape", "bogus=1x2"], 3, "model's inputs are: low_res"),
        (["build", "{model}", "--target", "arm", "--calib", "nowhere.npy", "--precision", "int8"], 3, "calibration data not found"),
        (["build", "{model}", "--target", "arm", "--precision", "int4"], 2, "Invalid value for '-p' / '--precision'"),
    ],
    ids=["missing-model", "unknown-target", "int8-no-calib", "placeholder", "bad-shape", "bad-calib", "bad-precision"],
)
def test_bad_input_exit_codes(args, code, message, superres, tmp_path):
    args = [a.replace("{model}", str(superres)) for a in args]
    result = run_cli(*args, "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "edgekit-report.json").exists()


@pytest.mark.slow
def test_build_json_and_summary(superres, tmp_path):
    result = run_cli("build", str(superres), "--target", "arm", "--precision", "fp16", "-o", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the report and nothing else
    for key in ("edgekit_version", "target", "backend", "precision", "artifact", "artifact_sha256", "artifact_bytes",
                "source_model_sha256", "stages", "verification"):
        assert key in report
    assert report["verification"]["status"] == "passed" and report["verification"]["where"] == "host"
    assert set(report["verification"]["latency_ms"]) >= {"p50", "p90", "p99", "runs"}
    assert {"name", "max_abs_error", "mean_abs_error", "cosine", "sqnr_db"} <= set(report["verification"]["outputs"][0])
    assert {"name", "seconds", "tool", "tool_version", "detail"} <= set(report["stages"][0])
    assert (tmp_path / "o" / report["artifact"]).is_file()


@pytest.mark.slow
def test_verification_failure_keeps_artifact_and_exits_1(superres, tmp_path):
    """A profile demanding more than fp16 can give: the build succeeds, verification fails honestly."""
    profile = tmp_path / "strict.toml"
    profile.write_text('name = "strict"\nbackend = "tflite"\nprecisions = ["fp16"]\ndefault_precision = "fp16"\n'
                       "[tolerances.fp16]\nmin_cosine = 0.999\nmin_sqnr_db = 200.0\n")
    out = tmp_path / "o"
    result = run_cli("build", str(superres), "--target", str(profile), "-o", str(out))
    assert result.returncode == 1, result.stderr
    report = json.loads((out / "edgekit-report.json").read_text())
    assert report["verification"]["status"] == "failed"
    assert "SQNR" in report["verification"]["reason"] and "< 200.0 dB" in report["verification"]["reason"]
    assert (out / report["artifact"]).is_file()
    assert "FAIL" in result.stdout


def test_import_is_light():
    code = ("import sys, edgekit, edgekit.cli, edgekit.pipeline; "
            "heavy = [m for m in ('tensorflow', 'torch', 'onnx2tf', 'coremltools', 'tensorrt', 'onnxruntime', 'ncnn') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_doctor_reports_backends_and_runtimes():
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["backends"]["tflite"]["ok"] and "onnx2tf" in info["backends"]["tflite"]["tools"]
    assert info["host_runtimes"]["ai_edge_litert"]
