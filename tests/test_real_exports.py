"""Whole builds of models that carry what real exports carry (tests/planted.py), and of the real-model zoo's models
when ``~/.cache/edgekit/zoo`` holds them (``python bench/zoo.py`` fetches them; the planted tests never need it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.errors import CalibrationError, ModelError, OptionsError, StageError
from edgekit.fsutil import sha256_tree
from edgekit.types import BuildOptions
from tests import planted

ZOO = Path(os.environ.get("EDGEKIT_ZOO_DIR") or Path.home() / ".cache" / "edgekit" / "zoo").expanduser()


def _options(**fields):
    return BuildOptions(latency_runs=2, warmup_runs=1, **fields)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, timeout=900, cwd=cwd)


def _voice_calib(path: Path, count: int = 10) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((count, 1, 16)).astype(np.float32), state=rng.standard_normal((count, 2, 1, 8)).astype(np.float32),
             ids=rng.integers(0, 16, (count, 1, 4)), gain=(rng.random(count) + 0.5).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def voice_tflite(tmp_path_factory):
    """The RNN-state model (state [2, 1, 8], ids int64, a scalar) built for android fp32 from [N, *shape] samples."""
    folder = tmp_path_factory.mktemp("voice")
    model = planted.rnn_state(folder / "voice.onnx")
    report = edgekit.build(model, "android", precision="fp32", calib=_voice_calib(folder / "calib.npz"), out_dir=folder / "out",
                           options=_options(use_cache=False))
    return model, folder / "out", report


@pytest.mark.slow
def test_rnn_state_scalar_and_int64_inputs_build_and_verify(voice_tflite):
    _, _, report = voice_tflite
    assert report.verification.status == "passed", report.verification.reason
    assert report.verification.samples == 8 and report.verification.input_source.startswith("calibration:")
    assert {s.name: list(s.shape) for s in report.inputs} == {"x": [1, 16], "state": [2, 1, 8], "ids": [1, 4], "gain": []}
    gain = next(b for b in report.io["inputs"] if b.onnx_name == "gain")
    assert gain.artifact_shape == (1,)  # onnx2tf makes the scalar [1]; edgekit feeds it that way


def _strip_signature(source: Path, target: Path, rename: bool) -> None:
    """A real .tflite without a SignatureDef (what onnx2tf writes for some exports), written with TFLite's own
    flatbuffer schema; ``rename`` also gives the I/O tensors names that match nothing."""
    script = ("import sys\nfrom tensorflow.lite.tools import flatbuffer_utils as f\nm = f.read_model(sys.argv[1])\nm.signatureDefs = []\n"
              "if sys.argv[3] == '1':\n    s = m.subgraphs[0]\n    for k, i in enumerate(list(s.inputs) + list(s.outputs)):\n"
              "        s.tensors[i].name = ('tensor_%d' % k).encode()\nf.write_model(m, sys.argv[2])\n")
    subprocess.run([sys.executable, "-c", script, str(source), str(target), "1" if rename else "0"], check=True, capture_output=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("rename", [False, True], ids=["names-kept", "names-lost"])
def test_tflite_without_signature_def(voice_tflite, tmp_path, rename):
    from edgekit.backends.tflite import TFLiteBackend
    from edgekit.modelio import load_model
    from edgekit.reverify import reverify

    model, out, report = voice_tflite
    copy = tmp_path / "build"
    shutil.copytree(out, copy)
    artifact = copy / report.artifact
    _strip_signature(out / report.artifact, artifact, rename)
    signature = TFLiteBackend._signature(artifact, tmp_path)
    assert signature["source"] == "tensor_details"
    loaded = load_model(model)
    inputs, outputs = TFLiteBackend._input_bindings(loaded.inputs, signature), TFLiteBackend._output_bindings(loaded.outputs, signature)
    assert signature["matched"] == ({"by_shape"} if rename else {"by_name", "by_shape"})  # outputs are "PartitionedCall:N"
    # the file lists its inputs as state, ids, x, gain: order alone would feed x into the state
    assert [b.artifact_name for b in inputs] == (["tensor_2", "tensor_0", "tensor_1", "tensor_3"] if rename
                                                 else [f"serving_default_{n}:0" for n in ("x", "state", "ids", "gain")])
    data = json.loads((copy / "edgekit-report.json").read_text())
    data["artifact_sha256"] = sha256_tree(artifact)  # the report now describes the stripped artifact
    data["io"] = {"inputs": [b.to_dict() for b in inputs], "outputs": [b.to_dict() for b in outputs]}
    (copy / "edgekit-report.json").write_text(json.dumps(data))
    again, error = reverify(copy, model=model)
    assert error is None and again.verification.status == "passed", again.verification.reason
    assert again.verification.environment["tflite_io"] == "tensor_details"
    assert min(o.sqnr_db for o in again.verification.outputs) > 100


@pytest.mark.slow
@pytest.mark.parametrize("target", ["android", "arm-ncnn", "ios"])
def test_names_converters_reject(tmp_path, target):
    """paddle2onnx/TF-style names: onnx2tf fails on them ("not a valid scope name") unless edgekit sanitizes them."""
    model = planted.bad_names(tmp_path / "bad_names.onnx")
    report = edgekit.build(model, target, precision="fp16" if target == "ios" else "fp32", out_dir=tmp_path / "out",
                           options=_options(use_cache=False), checks={"prob/out:0": {"top1": 0.99}})
    assert [b.onnx_name for b in report.io["inputs"]] == ["input:0"] and [b.onnx_name for b in report.io["outputs"]] == ["prob/out:0"]
    assert report.sanitized_names["io"] == {"input:0": "input_0", "prob/out:0": "prob_out_0"}
    assert report.sanitized_names["unnamed_nodes"] == 1 and report.sanitized_names["nodes_renamed"] == 6
    if target == "ios":
        assert report.verification.status == "skipped"  # Core ML runs on macOS only; the build itself succeeded
        return
    assert report.verification.status == "passed", report.verification.reason
    assert [o.name for o in report.verification.outputs] == ["prob/out:0"]
    assert report.verification.checks == [{"output": "prob/out:0", "metric": "top1", "min": 0.99, "value": 1.0, "passed": True}]
    assert report.verification.outputs[0].top1_agreement == 1.0 and report.verification.outputs[0].top5_agreement == 1.0
    data = json.loads((tmp_path / "out" / "edgekit-report.json").read_text())
    assert data["io"]["inputs"][0]["onnx_name"] == "input:0" and data["verification"]["outputs"][0]["name"] == "prob/out:0"


@pytest.mark.slow
def test_fix_input_folds_the_sample_rate_branch_for_ncnn(tmp_path):
    model = planted.sample_rate_if(tmp_path / "vad.onnx")
    with pytest.raises(StageError) as refused:
        edgekit.build(model, "arm-ncnn", precision="fp32", out_dir=tmp_path / "no", options=_options())
    assert "If" in refused.value.message and "--fix-input" in refused.value.hint
    rng = np.random.default_rng(0)
    calib = tmp_path / "audio.npz"
    np.savez(calib, audio=rng.standard_normal((6, 1, 1, 64)).astype(np.float32), sr=np.full(6, 8000))  # sr in the file is ignored
    report = edgekit.build(model, "arm-ncnn", precision="fp32", calib=calib, out_dir=tmp_path / "out", options=_options(),
                           fix_inputs={"sr": 16000})
    assert report.verification.status == "passed", report.verification.reason
    assert report.fixed_inputs == {"sr": {"dtype": "int64", "shape": [], "given": "16000", "value": 16000}}
    assert [b.onnx_name for b in report.io["inputs"]] == ["audio"] and [s.name for s in report.inputs] == ["audio"]
    profile = tmp_path / "vad.toml"
    profile.write_text('name = "vad"\nbackend = "ncnn"\nprecisions = ["fp32"]\n[fix_inputs]\nsr = 8000\n')
    via_profile = edgekit.build(model, str(profile), calib=calib, out_dir=tmp_path / "profile", options=_options())
    assert via_profile.verification.status == "passed" and via_profile.fixed_inputs["sr"]["value"] == 8000
    from edgekit.reverify import reverify

    again, _ = reverify(tmp_path / "out", model=model)  # edgekit verify freezes the input again
    assert again.verification.status == "passed" and again.verification.outputs[0].sqnr_db == report.verification.outputs[0].sqnr_db


@pytest.mark.slow
def test_dynamic_dims_from_the_sample_data(tmp_path):
    model = planted.dynamic_cnn(tmp_path / "dyn.onnx")
    with pytest.raises(OptionsError) as refused:
        edgekit.build(model, "arm-ncnn", precision="fp32", out_dir=tmp_path / "no")
    assert "dynamic dims" in refused.value.message and "--calib or --verify-data" in refused.value.hint
    np.save(tmp_path / "images.npy", np.random.default_rng(0).standard_normal((10, 1, 20, 24)).astype(np.float32))
    report = edgekit.build(model, "arm-ncnn", precision="int8", calib=tmp_path / "images.npy", out_dir=tmp_path / "out", options=_options())
    assert report.verification.status == "passed", report.verification.reason
    assert report.shapes_from_data == {"image": [1, 1, 20, 24]} and list(report.inputs[0].shape) == [1, 1, 20, 24]
    assert list(report.outputs[0].shape) == [1, 4, 20, 24]


@pytest.mark.slow
def test_int8_is_verified_on_held_out_samples(tmp_path):
    model = planted.dynamic_cnn(tmp_path / "dyn.onnx")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "calib.npy", rng.standard_normal((10, 1, 1, 16, 16)).astype(np.float32))
    np.save(tmp_path / "verify.npy", rng.standard_normal((3, 1, 1, 16, 16)).astype(np.float32))
    report = edgekit.build(model, "arm-ncnn", precision="int8", calib=tmp_path / "calib.npy", out_dir=tmp_path / "held", options=_options())
    v = report.verification
    assert (v.samples, v.calibration_samples, v.input_source) == (2, 8, f"held-out:{tmp_path / 'calib.npy'}[8:10]")
    assert next(s for s in report.stages if s.name == "quantize").detail["calibration_samples"] == 8
    apart = edgekit.build(model, "arm-ncnn", precision="int8", calib=tmp_path / "calib.npy", verify_data=tmp_path / "verify.npy",
                          out_dir=tmp_path / "apart", options=_options())
    assert (apart.verification.samples, apart.verification.calibration_samples) == (3, 10)
    assert apart.verification.input_source == f"verify-data:{tmp_path / 'verify.npy'}"
    done = _cli("verify", str(tmp_path / "held"), "--json", cwd=tmp_path)  # edgekit verify re-creates the same split
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)["verification"]
    assert again["input_source"] == v.input_source and again["calibration_samples"] == 8
    assert again["outputs"][0]["sqnr_db"] == pytest.approx(v.outputs[0].sqnr_db, rel=1e-9)
    np.save(tmp_path / "one.npy", rng.standard_normal((1, 1, 1, 16, 16)).astype(np.float32))
    with pytest.raises(CalibrationError, match="cannot be split"):
        edgekit.build(model, "arm-ncnn", precision="int8", calib=tmp_path / "one.npy", out_dir=tmp_path / "one")


@pytest.mark.slow
def test_onnxruntime_quantized_model_refused_then_dequantized(tmp_path):
    model = planted.ort_quantized(planted.float_conv_lstm(tmp_path / "float.onnx"), tmp_path / "quantized.onnx")
    refused = _cli("build", str(model), "--target", "arm-ncnn", "--precision", "fp32", "-o", str(tmp_path / "no"), cwd=tmp_path)
    assert refused.returncode == 3, refused.stderr
    for op in ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "com.microsoft::DynamicQuantizeLSTM", "--dequantize"):
        assert op in refused.stderr
    assert "Traceback" not in refused.stderr
    report = edgekit.build(model, "arm-ncnn", precision="fp32", out_dir=tmp_path / "out", options=_options(), dequantize=True)
    assert report.verification.status == "passed", report.verification.reason
    assert report.dequantized["ops"]["com.microsoft::DynamicQuantizeLSTM"] == 1 and report.dequantized["check"]["passed"]
    assert report.dequantized["check"]["outputs"][0]["sqnr_db"] > 20  # the float rewrite vs onnxruntime running the original
    with pytest.raises(ModelError, match="com.microsoft::Gelu"):
        edgekit.build(planted.microsoft_op(tmp_path / "gelu.onnx"), "arm-ncnn", precision="fp32", out_dir=tmp_path / "gelu", dequantize=True)


# --- the real models, where the zoo has been fetched ---------------------------------------------------------------


def _zoo_file(*parts: str) -> Path:
    path = ZOO.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (run 'python bench/zoo.py' once to fetch the zoo)")
    return path


@pytest.mark.slow
def test_zoo_ddddocr_onnxruntime_quantized_recognizer(tmp_path):
    """ddddocr's default recognizer (common_old.onnx) is onnxruntime-quantized: refused by name, built with --dequantize."""
    model = _zoo_file("extracted", "ddddocr", "ddddocr", "common_old.onnx")
    data = _zoo_file("data", "captcha_lines-input1", "verify.npz")
    refused = _cli("build", str(model), "--target", "arm-ncnn", "--precision", "fp16", "-o", str(tmp_path / "no"), cwd=tmp_path)
    assert refused.returncode == 3 and "ConvInteger (21 nodes" in refused.stderr and "LSTM_202_quant" in refused.stderr
    report = edgekit.build(model, "android", precision="fp32", calib=data, out_dir=tmp_path / "out", options=_options(max_samples=4),
                           dequantize=True, input_shapes={"input1": (1, 1, 64, 192)})
    check = report.dequantized["check"]
    assert check["passed"] and check["outputs"][0]["sqnr_db"] > 25 and check["outputs"][0]["top1_agreement"] > 0.99
    assert report.verification.status == "passed", report.verification.reason
    assert list(report.outputs[0].shape) == [24, 1, 8210]  # declared [1, seqlen]; the run says [T, 1, classes]


@pytest.mark.slow
@pytest.mark.parametrize(("bidirectional", "precision"), [(False, "fp32"), (True, "fp32"), (True, "int8")],
                         ids=["forward-Y_h", "bidirectional", "bidirectional-int8"])
def test_exported_lstm_builds_for_ncnn(tmp_path, bidirectional, precision):
    """pnnx leaves such LSTMs' weights as MemoryData blobs ncnn cannot load, unless edgekit rewrites them first;
    ncnn int8 keeps the LSTM in float (its weights are walked, not quantized) and quantizes the head."""
    model = planted.lstm_as_exported(tmp_path / "lstm.onnx", bidirectional)
    calib = tmp_path / "mels.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((12, 1, 12, 10)).astype(np.float32))
    report = edgekit.build(model, "arm-ncnn", precision=precision, calib=calib, out_dir=tmp_path / "out", options=_options())
    assert report.verification.status == "passed", report.verification.reason
    assert next(s for s in report.stages if s.name == "convert").detail["recurrent_rewritten"]
    if precision == "int8":
        quantize = next(s for s in report.stages if s.name == "quantize").detail
        assert quantize["quantized_layers"] == 1 and quantize["float_layers_with_weights"] == 1  # the head int8, the LSTM float


@pytest.mark.slow
@pytest.mark.parametrize("target", ["android", "arm-ncnn"])
def test_opset_11_softmax_over_channels(tmp_path, target):
    """onnx2tf (and pnnx) apply an opset<13 Softmax(axis=1) to a size-1 axis after the NHWC transpose; edgekit upgrades to 13 first."""
    report = edgekit.build(planted.opset11_softmax(tmp_path / "old.onnx"), target, precision="fp32", out_dir=tmp_path / "out", options=_options())
    assert report.verification.status == "passed", report.verification.reason
    load = next(s for s in report.stages if s.name == "load").detail
    assert load["opset"] == 11 and load["opset_upgraded_from"] == 11


@pytest.mark.slow
def test_ceil_mode_max_pool_int8_runs_in_xnnpack(tmp_path):
    """onnx2tf pads MaxPool with -FLT_MAX; int8 then gets a 1e36 scale and XNNPACK refuses the model (the zoo's MTCNN)."""
    model = planted.ceil_mode_pool(tmp_path / "pool.onnx")
    np.save(tmp_path / "images.npy", np.random.default_rng(0).standard_normal((20, 1, 3, 24, 24)).astype(np.float32))
    report = edgekit.build(model, "android", precision="int8", calib=tmp_path / "images.npy", out_dir=tmp_path / "out", options=_options())
    assert report.verification.status == "passed", report.verification.reason
    assert len(next(s for s in report.stages if s.name == "convert").detail["max_pools_edge_padded"]) == 2


def _stacked_lstm_export(path: Path) -> Path:
    """A 3-layer LSTM whose head reads ``hidden[-1]`` (Resemblyzer's speaker encoder in small), exported by PyTorch:
    the layers' final states are concatenated and the last one gathered."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.linear = torch.nn.LSTM(10, 16, num_layers=3, batch_first=True), torch.nn.Linear(16, 8)

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            return torch.relu(self.linear(hidden[-1]))

    torch.onnx.export(Encoder().eval(), (torch.randn(1, 20, 10),), str(path), input_names=["mels"], output_names=["embedding"],
                      opset_version=17, dynamo=False)
    return path


@pytest.mark.slow
def test_stacked_lstm_last_hidden_state_for_tflite(tmp_path):
    """onnx2tf returned the whole stack of final states for ``hidden[-1]`` ((3, 8) for (1, 8)): the Gather of one
    concatenated input now reads that input directly, and the build verifies."""
    model = _stacked_lstm_export(tmp_path / "encoder.onnx")
    report = edgekit.build(model, "android", precision="fp32", out_dir=tmp_path / "out", options=_options(use_cache=False))
    assert report.verification.status == "passed", report.verification.reason
    assert report.verification.outputs[0].sqnr_db > 60
    assert next(s for s in report.stages if s.name == "convert").detail["gathers_from_concats"] == ["/Gather"]
