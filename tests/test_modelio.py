"""Load & check: every bad-input case ends in a ModelError/OptionsError that says what is wrong."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import OptionsError
from edgekit.modelio import apply_input_shapes, load_model, parse_shape


def tiny_model(dynamic_batch: bool = False) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_external(folder: Path, location: str = "weights.bin") -> Path:
    """Save tiny_model with its weight as external data, then point it at ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model()
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    if location != "weights.bin":
        model = onnx.load_model(str(path), load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save_model(model, str(path))
    return path


def test_good_model_loads(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(), str(path))
    loaded = load_model(path)
    assert [s.name for s in loaded.inputs] == ["x"] and loaded.inputs[0].shape == (1, 4)
    assert loaded.outputs[0].dtype == "float32" and loaded.opset == 17 and len(loaded.sha256) == 64


def test_external_data_inside_folder_loads(tmp_path):
    loaded = load_model(save_external(tmp_path / "m"))
    assert len(loaded.external_files) == 1


def test_dynamic_dims_need_input_shape(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(dynamic_batch=True), str(path))
    loaded = load_model(path)
    with pytest.raises(OptionsError) as info:
        apply_input_shapes(loaded, {}, require_static=True)
    assert "dynamic dims" in str(info.value) and "--input-shape x=Nx4" in str(info.value)
    fixed = apply_input_shapes(loaded, {"x": (2, 4)}, require_static=True)
    assert fixed.inputs[0].shape == (2, 4) and fixed.outputs[0].shape == (2, 3)


def test_bad_input_shapes(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(dynamic_batch=True), str(path))
    loaded = load_model(path)
    with pytest.raises(OptionsError, match="model's inputs are: x"):
        apply_input_shapes(loaded, {"image": (1, 4)}, require_static=True)
    with pytest.raises(OptionsError, match="rank 2"):
        apply_input_shapes(loaded, {"x": (1, 4, 1)}, require_static=True)
    with pytest.raises(OptionsError, match="fixed to 4"):
        apply_input_shapes(loaded, {"x": (1, 5)}, require_static=True)


def test_parse_shape():
    assert parse_shape("image=1x3x224x224") == ("image", (1, 3, 224, 224))
    assert parse_shape("a:b=1,2") == ("a:b", (1, 2))
    for bad in ("image", "image=1xAx2", "image=0x3"):
        with pytest.raises(OptionsError):
            parse_shape(bad)


def test_new_ir_version_is_lowered_to_what_the_opsets_need(tmp_path):
    model = tiny_model()
    model.ir_version = 12  # what onnx 1.19 stamps; onnxruntime 1.23 refuses it
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    loaded = load_model(path)
    assert loaded.ir_version_lowered_from == 12 and loaded.proto.ir_version == 8
    from edgekit.reference import session_for

    assert session_for(loaded.proto) is not None
