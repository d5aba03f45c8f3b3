"""The backend contract: a backend registered from outside edgekit builds, verifies and reports end to end,
its typed options are checked when its profile loads, and its declared abilities are what the pipeline uses."""

from __future__ import annotations

import json

import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.backends import Backend, backend_class, get_backend, register, registered
from edgekit.errors import ProfileError, StageError
from edgekit.profiles import load_profile_file
from edgekit.types import BuildOptions

PROFILE = """name = "onnx-copy-test"
backend = "onnx-copy"
precisions = ["fp32"]
default_precision = "fp32"

[backend_options]
{options}
"""


@pytest.fixture
def fake_backend():
    register("onnx-copy", "tests.fake_backend:OnnxCopyBackend")
    yield
    from edgekit.backends import _REGISTRY

    _REGISTRY.pop("onnx-copy", None)


def _profile(tmp_path, options: str = "num_threads = 2"):
    path = tmp_path / "onnx-copy.toml"
    path.write_text(PROFILE.format(options=options))
    return path


def test_a_registered_backend_builds_and_verifies_end_to_end(fake_backend, cnn, tmp_path):
    report = edgekit.build(cnn, str(_profile(tmp_path)), out_dir=tmp_path / "out", options=BuildOptions(use_cache=False))
    assert "onnx-copy" in registered()
    assert report.backend == "onnx-copy" and report.verification.status == "passed"
    assert report.verification.runtime.startswith("onnxruntime")
    assert all(o.sqnr_db > 100 for o in report.verification.outputs)  # the same model on the same runtime
    convert = next(s for s in report.stages if s.name == "convert")
    assert convert.tool == "copy" and convert.detail["threads"] == 2
    data = json.loads((tmp_path / "out" / "edgekit-report.json").read_text())
    assert data["artifact_runtime"] == "onnxruntime" and (tmp_path / "out" / data["artifact"]).is_file()


def test_its_options_are_checked_when_the_profile_loads(fake_backend, tmp_path):
    with pytest.raises(ProfileError) as caught:
        load_profile_file(_profile(tmp_path, "num_thread = 2"))
    assert "key 'backend_options.num_thread': unknown onnx-copy option (did you mean 'num_threads'?)" in caught.value.message
    with pytest.raises(ProfileError, match=r"num_threads': must be an integer in \[1, 64\]; got 0"):
        load_profile_file(_profile(tmp_path, "num_threads = 0"))
    assert load_profile_file(_profile(tmp_path)).options.num_threads == 2


def test_its_unsupported_ops_are_refused_before_converting(fake_backend, tmp_path):
    topk = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="the_topk")
    graph = helper.make_graph([topk], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor("k", TensorProto.INT64, [1], [3])])
    model = tmp_path / "topk.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    with pytest.raises(StageError, match=r"TopK \(the_topk\): this backend has no TopK"):
        edgekit.build(model, str(_profile(tmp_path)), out_dir=tmp_path / "out", options=BuildOptions(use_cache=False))


@pytest.mark.parametrize("name", ["tflite", "ncnn", "coreml", "tensorrt"])
def test_builtin_backends_declare_every_ability(name):
    cls = backend_class(name)
    assert cls is not None and issubclass(cls, Backend)
    backend = get_backend(name)
    for attribute in ("name", "extra", "runtime", "Options", "tool_distributions", "unsupported_ops", "supports_shape_ranges",
                      "float_layer_precisions", "intermediate_outputs", "float_layer_ops", "float_only_layers", "artifact_tensors",
                      "probe_options", "float_twin"):
        assert hasattr(backend, attribute), f"{name} lacks {attribute}"
    assert backend.name == name and callable(backend.convert)
