"""The sample-file contract: per input, [N, *full input shape]; the legacy forms it still accepts, and how ambiguity
is resolved (docs/verification.md, "Sample files")."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.calibration import held_out_split, load_samples, random_samples
from edgekit.errors import CalibrationError
from edgekit.prepare import choose_samples, samples_from_source, shapes_from_data
from edgekit.profiles import Preprocessing
from edgekit.types import TensorSpec

PRE = Preprocessing()
VOICE = [TensorSpec("x", (1, 16), "float32"), TensorSpec("state", (2, 1, 8), "float32"),
         TensorSpec("ids", (1, 4), "int64"), TensorSpec("sr", (), "int64")]


def _voice(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((count, 1, 16)).astype(np.float32), "state": rng.standard_normal((count, 2, 1, 8)).astype(np.float32),
            "ids": rng.integers(0, 16, (count, 1, 4)), "sr": np.full(count, 16000, np.int64)}


def test_full_shape_per_sample_for_every_input(tmp_path):
    """Batch on axis 1 (an RNN state), a scalar, int64: axis 0 always counts samples."""
    np.savez(tmp_path / "voice.npz", **_voice(5))
    samples = load_samples(tmp_path / "voice.npz", VOICE, PRE)
    assert samples.count == 5
    one = samples.sample(3)
    assert {k: v.shape for k, v in one.items()} == {"x": (1, 16), "state": (2, 1, 8), "ids": (1, 4), "sr": ()}
    assert one["sr"].dtype == np.int64 and isinstance(one["sr"], np.ndarray) and int(one["sr"]) == 16000
    np.testing.assert_array_equal(one["state"], _voice(5)["state"][3])


def test_state_with_batch_on_axis_1_is_not_read_as_legacy_rows(tmp_path):
    """[4, 1, 8] for a [2, 1, 8] state is neither N full samples nor one: refused, never split into wrong samples."""
    data = _voice(4)
    data["state"] = np.zeros((4, 1, 8), np.float32)
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(CalibrationError, match=r"'state' have shape \[4, 1, 8\].*wants \[2, 1, 8\] per sample"):
        load_samples(tmp_path / "bad.npz", VOICE, PRE)


def test_one_full_sample_and_legacy_forms(tmp_path):
    image = [TensorSpec("image", (1, 3, 4, 4), "float32")]
    rng = np.random.default_rng(1)
    legacy = rng.standard_normal((6, 3, 4, 4)).astype(np.float32)  # today's [N, *shape[1:]] for a batch-1 model
    np.save(tmp_path / "legacy.npy", legacy)
    np.save(tmp_path / "new.npy", legacy[:, None])  # the new [N, *shape]
    np.save(tmp_path / "unbatched.npy", legacy[0])  # one sample without its batch dim
    a, b, c = (load_samples(tmp_path / f"{n}.npy", image, PRE) for n in ("legacy", "new", "unbatched"))
    assert (a.count, b.count, c.count) == (6, 6, 1)
    np.testing.assert_array_equal(a.arrays["image"], b.arrays["image"])
    np.testing.assert_array_equal(c.sample(0)["image"], legacy[:1])
    state = [TensorSpec("state", (2, 1, 8), "float32")]  # axis 0 is not a batch: an array of its exact shape is one sample
    np.save(tmp_path / "state.npy", np.ones((2, 1, 8), np.float32))
    assert load_samples(tmp_path / "state.npy", state, PRE).count == 1


def test_dynamic_axis_0_reads_rows_as_samples(tmp_path):
    """[8, 3, 4, 4] for ['N', 3, 'H', 'W'] could be one batch-8 sample or 8 samples: 8 samples wins (datasets are
    stored that way); [1, 8, 3, 4, 4] says batch 8 explicitly."""
    spec = [TensorSpec("image", ("N", 3, "H", "W"), "float32")]
    np.save(tmp_path / "rows.npy", np.zeros((8, 3, 4, 4), np.float32))
    np.save(tmp_path / "batch8.npy", np.zeros((1, 8, 3, 4, 4), np.float32))
    rows, batch8 = load_samples(tmp_path / "rows.npy", spec, PRE), load_samples(tmp_path / "batch8.npy", spec, PRE)
    assert rows.count == 8 and rows.shapes() == {"image": (1, 3, 4, 4)}
    assert batch8.count == 1 and batch8.shapes() == {"image": (8, 3, 4, 4)}
    assert shapes_from_data(spec, [rows]) == {"image": (1, 3, 4, 4)}


def test_samples_that_disagree_on_a_dynamic_dim(tmp_path):
    spec = [TensorSpec("image", (1, 1, "H", "W"), "float32")]
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 1, 8, 8), np.float32))
    np.save(folder / "b.npy", np.zeros((1, 1, 8, 12), np.float32))
    with pytest.raises(CalibrationError, match=r"disagree on the shape of input 'image': \[1, 1, 8, 8\] in a.npy, \[1, 1, 8, 12\] in b.npy"):
        load_samples(folder, spec, PRE)
    np.save(tmp_path / "c.npy", np.zeros((2, 1, 1, 8, 8), np.float32))
    np.save(tmp_path / "d.npy", np.zeros((2, 1, 1, 6, 6), np.float32))
    calib, verify = (load_samples(tmp_path / f"{n}.npy", spec, PRE) for n in "cd")
    with pytest.raises(Exception, match="sample sets disagree on its shape"):
        shapes_from_data(spec, [calib, verify])


def test_dtypes_are_checked_and_ints_stay_ints(tmp_path):
    data = _voice(3)
    data["ids"] = data["ids"].astype(np.int32)  # int32 for an int64 input: widened
    np.savez(tmp_path / "ok.npz", **data)
    assert load_samples(tmp_path / "ok.npz", VOICE, PRE).sample(0)["ids"].dtype == np.int64
    data["ids"] = data["ids"].astype(np.float32) + 0.5
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(CalibrationError, match="'ids' have dtype float32, the model wants int64"):
        load_samples(tmp_path / "bad.npz", VOICE, PRE)


def test_random_inputs_for_scalar_int_and_bool_inputs():
    specs = [*VOICE, TensorSpec("mask", (1, 4), "bool")]
    samples = random_samples(specs, 3, seed=2)
    assert samples.arrays["sr"].shape == (3,) and samples.sample(0)["sr"].shape == ()
    assert samples.arrays["state"].shape == (3, 2, 1, 8) and samples.arrays["mask"].dtype == bool
    assert samples.arrays["ids"].min() >= 0 and samples.arrays["ids"].max() < 16  # valid as indices into small tables


def test_held_out_split_and_its_reproduction(tmp_path):
    assert [held_out_split(n, "x") for n in (2, 5, 10, 64)] == [1, 4, 8, 51]
    with pytest.raises(CalibrationError, match="(?s)1 sample.*cannot be split.*--verify-data"):
        held_out_split(1, "calib.npz")
    np.savez(tmp_path / "voice.npz", **_voice(10))
    calib = load_samples(tmp_path / "voice.npz", VOICE, PRE)
    calibration, verification = choose_samples(calib, None, calibrates=True, inputs=VOICE, count=8, seed=0)
    assert (calibration.count, verification.count) == (8, 2)
    assert verification.source == f"held-out:{tmp_path / 'voice.npz'}[8:10]"
    again = samples_from_source(verification.source, 2, VOICE, PRE)
    for name in calib.arrays:  # edgekit verify re-creates exactly the held-out samples
        np.testing.assert_array_equal(again.arrays[name], verification.arrays[name])
    held = {verification.sample(i)["x"].tobytes() for i in range(verification.count)}
    assert not held & {calibration.sample(i)["x"].tobytes() for i in range(calibration.count)}  # never calibrated on
    floats, verified = choose_samples(calib, None, calibrates=False, inputs=VOICE, count=8, seed=0)
    assert floats.count == 10 and verified.count == 8 and verified.source == f"calibration:{tmp_path / 'voice.npz'}"
    np.savez(tmp_path / "other.npz", **_voice(4, seed=9))
    apart = load_samples(tmp_path / "other.npz", VOICE, PRE, kind="verify-data")
    calibration, verification = choose_samples(calib, apart, calibrates=True, inputs=VOICE, count=8, seed=0)
    assert calibration.count == 10 and verification.count == 4 and verification.source.startswith("verify-data:")
