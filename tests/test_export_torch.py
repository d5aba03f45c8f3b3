"""The export stage from PyTorch: real torch.onnx exports of a conv + LSTM + attention model into each backend
that runs here, the export check catching a module that computes something else, and the pickle policy."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import edgekit  # noqa: E402
from edgekit.errors import ModelError, OptionsError, StageError  # noqa: E402
from tests.models.torch_nets import ConvLstmAttention, DataDependentBranch, RunsCodeWhenUnpickled, seeded  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLE = (1, 4, 20)


REPO = Path(__file__).resolve().parents[1]


def edgekit_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # the repo on the path: a pickled module's class (tests.models) must be importable, as the user's package would be
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONPATH": path})


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("torch-models")
    model = seeded(ConvLstmAttention())
    x = torch.randn(*EXAMPLE)
    torch.export.save(torch.export.export(model, (x,)), str(folder / "net.pt2"))
    torch.jit.trace(model, (x,), check_trace=False).save(str(folder / "net.ts"))
    torch.save(model, folder / "net_module.pt")
    torch.save(model.state_dict(), folder / "net_weights.pt")
    return folder


def test_pt2_through_the_cli_into_every_backend_here(torch_files: Path, tmp_path: Path):
    out = tmp_path / "out"
    run = edgekit_cli("build", str(torch_files / "net.pt2"), "-t", "arm", "-t", "arm-ncnn", "-t", "ios", "--precision", "fp32",
                      "-o", str(out), "--json", "--junit", str(tmp_path / "junit.xml"), cwd=tmp_path)
    # Core ML's route (onnx2torch) has no LSTM: that target stops at load with the op named, the others build
    assert run.returncode == 4, run.stderr[-3000:]
    assert "error (ios): the coreml backend cannot convert these ops:" in run.stderr and "LSTM" in run.stderr
    reports = {r["target"]: r for r in json.loads(run.stdout)}
    assert reports["ios"]["exit_code"] == 4
    for target in ("arm", "arm-ncnn"):
        report = reports[target]
        export = report["export"]
        assert report["source_model"].endswith("net.pt2") and report["stages"][0]["name"] == "export"
        assert export["exporter"] == "dynamo" and export["fallback_reason"] is None and export["opset"] == 18
        assert export["input_names"] == ["x"] and export["input_shapes"] == {"x": list(EXAMPLE)}
        assert all(o["passed"] and o["sqnr_db"] > 80 for o in export["outputs"].values()), export["outputs"]
        assert (out / target / export["onnx"]).is_file()
        verification = report["verification"]
        assert verification["status"] == "passed" and verification["outputs"][0]["sqnr_db"] > 40, verification
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<testcase") == 3 and junit.count("<error") == 1


def test_reverify_of_an_exported_build_uses_the_kept_onnx(torch_files: Path, tmp_path: Path):
    out = tmp_path / "out"
    build = edgekit_cli("build", str(torch_files / "net.pt2"), "-t", "arm-ncnn", "--precision", "fp32", "-o", str(out), "-q", cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    again = edgekit_cli("verify", str(out), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["verification"]["status"] == "passed"
    (out / "net.exported.onnx").write_bytes(b"not the exported model")
    tampered = edgekit_cli("verify", str(out), cwd=tmp_path)
    assert tampered.returncode == 3


def test_python_api_module_with_dynamic_batch(tmp_path: Path):
    model = seeded(ConvLstmAttention())
    batch = torch.export.Dim("batch", min=1, max=8)
    report = edgekit.build(model, target="arm-ncnn", precision="fp32", out_dir=tmp_path,
                           example_inputs=(torch.randn(*EXAMPLE),), dynamic_shapes=({0: batch},))
    assert report.verification.status == "passed"
    assert report.export["source_format"] == "module" and report.export["exporter"] == "dynamo"
    assert report.source_model.endswith("ConvLstmAttention>") and report.cache is None  # in-memory modules are never cached
    assert report.inputs[0].shape == EXAMPLE  # the dynamic batch is fixed to the example's for the static target
    assert model.training is False


@pytest.mark.parametrize("mode", ["train", "batchnorm-only"])
def test_training_mode_fails_at_the_export_stage(tmp_path: Path, mode: str):
    model = seeded(ConvLstmAttention()).train()
    if mode == "batchnorm-only":
        model.drop.eval()  # no randomness left: batch-norm on batch statistics alone changes the numbers
    with pytest.raises(StageError) as caught:
        edgekit.build(model, target="arm-ncnn", precision="fp32", out_dir=tmp_path, example_inputs=(torch.randn(*EXAMPLE),))
    message = str(caught.value)
    assert "stage 'export' failed" in message and "computes different numbers" in message
    assert "the module is in training mode" in message and "BatchNorm1d" in message and "model.eval()" in message
    assert ("Dropout" in message) == (mode == "train")
    assert ("gives different outputs for the same input" in message) == (mode == "train")
    assert not (tmp_path / "edgekit-report.json").exists()


def test_dynamo_failure_falls_back_to_the_torchscript_exporter(tmp_path: Path):
    report = edgekit.build(seeded(DataDependentBranch()), target="arm-ncnn", precision="fp32", out_dir=tmp_path,
                           example_inputs=(torch.randn(1, 3, 16, 16),))
    assert report.export["exporter"] == "torchscript" and report.export["opset"] == 17
    assert "data-dependent" in report.export["fallback_reason"]
    assert report.verification.status == "passed"


def test_torchscript_needs_input_shapes_then_exports(torch_files: Path, tmp_path: Path):
    missing = edgekit_cli("build", str(torch_files / "net.ts"), "-t", "arm-ncnn", "--precision", "fp32", "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert missing.returncode == 3 and "--input-shape x=" in missing.stderr
    built = edgekit_cli("build", str(torch_files / "net.ts"), "-t", "arm-ncnn", "--precision", "fp32", "-o", str(tmp_path / "b"),
                        "--input-shape", "x=1x4x20", "--json", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    report = json.loads(built.stdout)
    assert report["export"]["source_format"] == "torchscript" and report["verification"]["status"] == "passed"


def test_pickled_module_needs_trust_pickle(torch_files: Path, tmp_path: Path):
    refused = edgekit_cli("build", str(torch_files / "net_module.pt"), "-t", "arm-ncnn", "--precision", "fp32",
                          "--input-shape", "x=1x4x20", "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert refused.returncode == 3 and "--trust-pickle" in refused.stderr and "ConvLstmAttention" in refused.stderr
    trusted = edgekit_cli("build", str(torch_files / "net_module.pt"), "-t", "arm-ncnn", "--precision", "fp32", "--trust-pickle",
                          "--input-shape", "x=1x4x20", "-o", str(tmp_path / "b"), "--json", cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert json.loads(trusted.stdout)["export"]["source_format"] == "pickled-module"


def test_state_dict_says_what_is_missing(torch_files: Path, tmp_path: Path):
    with pytest.raises(ModelError, match="state_dict"):
        edgekit.build(torch_files / "net_weights.pt", target="arm-ncnn", precision="fp32", out_dir=tmp_path, input_shapes={"x": EXAMPLE})


def test_hostile_pickle_never_runs_without_the_flag(tmp_path: Path):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "model.pt"
    torch.save(RunsCodeWhenUnpickled(str(marker)), hostile)
    with pytest.raises(ModelError) as caught:
        edgekit.build(hostile, target="arm-ncnn", out_dir=tmp_path / "out", input_shapes={"x": EXAMPLE})
    assert "--trust-pickle" in caught.value.hint and "GLOBAL io.open" in caught.value.message
    assert not marker.exists()


def test_hostile_pt2_sample_inputs_never_run(torch_files: Path, tmp_path: Path):
    """torch.export.load reads example inputs with weights_only=True, then silently retries with full pickle."""
    marker = tmp_path / "code-ran"
    payload = io.BytesIO()
    torch.save(RunsCodeWhenUnpickled(str(marker)), payload)
    hostile = tmp_path / "hostile.pt2"
    with zipfile.ZipFile(torch_files / "net.pt2") as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else source.read(item)
            target.writestr(item, data)
    with pytest.raises(ModelError):
        edgekit.build(hostile, target="arm-ncnn", out_dir=tmp_path / "out")
    assert not marker.exists()


def test_pt2_with_pickled_payloads_is_refused(torch_files: Path, tmp_path: Path):
    hostile = tmp_path / "flagged.pt2"
    with zipfile.ZipFile(torch_files / "net.pt2") as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises(ModelError, match="pickled payloads") as caught:
        edgekit.build(hostile, target="arm-ncnn", out_dir=tmp_path / "out")
    assert "--trust-pickle" in caught.value.hint


def test_input_shape_for_an_unknown_input(tmp_path: Path):
    with pytest.raises(OptionsError, match="model's inputs are: x"):
        edgekit.build(seeded(ConvLstmAttention()), target="arm-ncnn", out_dir=tmp_path, example_inputs=(torch.randn(*EXAMPLE),),
                      input_shapes={"image": (1, 3, 8, 8)})
