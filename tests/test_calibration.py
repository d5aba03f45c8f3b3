
import numpy as np
from PIL import Image

from edgekit.calibration import load_samples, random_samples
from edgekit.profiles import Preprocessing
from edgekit.types import TensorSpec

IMAGE = [TensorSpec("image", (1, 3, 8, 8), "float32")]
PRE = Preprocessing(layout="NCHW", scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_random_samples_are_seeded_and_typed():
    a = random_samples(IMAGE + [TensorSpec("ids", (1, 4), "int64")], 3, seed=1)
    b = random_samples(IMAGE + [TensorSpec("ids", (1, 4), "int64")], 3, seed=1)
    assert a.count == 3 and a.arrays["image"].shape == (3, 1, 3, 8, 8) and a.arrays["ids"].dtype == np.int64
    np.testing.assert_array_equal(a.arrays["image"], b.arrays["image"])
    assert a.sample(1)["image"].shape == (1, 3, 8, 8)


def test_npy_npz_and_folders(tmp_path):
    data = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "one.npy", data)
    np.savez(tmp_path / "one.npz", image=data)
    assert load_samples(tmp_path / "one.npy", IMAGE, PRE).count == 5
    assert load_samples(tmp_path / "one.npz", IMAGE, PRE).count == 5
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        np.save(folder / f"{i}.npy", data[i])  # single samples without the batch dim
    samples = load_samples(folder, IMAGE, PRE)
    assert samples.count == 4 and samples.source.startswith("calibration:")
    np.testing.assert_array_equal(samples.sample(2)["image"], data[2][None])


def test_image_folder_is_preprocessed(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 255 * (i % 2), np.uint8)).save(tmp_path / f"{i}.png")
    samples = load_samples(tmp_path, IMAGE, PRE)
    assert samples.arrays["image"].shape == (3, 1, 3, 8, 8)
    # black -> (0 - 0.5) / 0.25 = -2, white -> (1 - 0.5) / 0.25 = 2
    assert np.allclose(samples.sample(0)["image"], -2) and np.allclose(samples.sample(1)["image"], 2)
