"""Calibration and verification inputs: user data (.npy/.npz/folders/images) or seeded random data.

A *sample set* is ``dict[input name -> array of shape (N, *input_shape[1:])]`` with the batch dim
of each sample kept as 1 when the model's batch is 1: ``samples[name][i:i+1]`` feeds one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import CalibrationError
from edgekit.profiles import Preprocessing
from edgekit.types import TensorSpec

# Generated verification inputs larger than this are refused (a hostile model can declare huge dims).
MAX_INPUT_BYTES = 1 << 30
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


@dataclass
class SampleSet:
    """Rows stacked along the batch dim; one run feeds ``batch`` rows of every input."""

    arrays: dict[str, np.ndarray]  # name -> (rows, *shape[1:])
    source: str  # "calibration:<path>" or "random(seed=N)"
    batch: int = 1

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values()))) // self.batch

    def sample(self, index: int) -> dict[str, np.ndarray]:
        rows = slice(index * self.batch, (index + 1) * self.batch)
        return {name: arr[rows] for name, arr in self.arrays.items()}

    def head(self, count: int) -> SampleSet:
        return SampleSet({k: v[: count * self.batch] for k, v in self.arrays.items()}, self.source, self.batch)


def _static_shape(spec: TensorSpec) -> tuple[int, ...]:
    if not spec.is_static:
        raise CalibrationError(f"input '{spec.name}' has dynamic dims {list(spec.shape)}; fix them with --input-shape first")
    return tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]


def random_samples(inputs: list[TensorSpec], count: int, seed: int) -> SampleSet:
    """Seeded inputs in each input's dtype: standard normal floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    batch = _batch_of(inputs)
    for spec in inputs:
        shape = (count * batch, *_static_shape(spec)[1:])
        dtype = np.dtype(spec.dtype) if not spec.dtype.startswith("onnx:") else np.dtype("V1")
        needed = int(np.prod(shape, dtype=np.float64)) * max(dtype.itemsize, 1)
        if needed > MAX_INPUT_BYTES:
            raise CalibrationError(f"input '{spec.name}' {list(spec.shape)} would need {needed / 1024**3:.1f} GiB for {count} verification samples; refusing to allocate it",
                                   hint="check the model's input shape, fix it with --input-shape, or lower --samples")
        if dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            arrays[spec.name] = rng.integers(0, 16, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.random(shape) > 0.5
        else:
            raise CalibrationError(f"input '{spec.name}' has dtype {spec.dtype}; edgekit cannot generate inputs of that type", hint="pass --calib with real samples")
    return SampleSet(arrays, f"random(seed={seed})", batch)


def _batch_of(inputs: list[TensorSpec]) -> int:
    dims = [_static_shape(s)[0] for s in inputs if s.shape]
    return max(dims) if dims else 1


def _fit_sample(name: str, array: np.ndarray, spec: TensorSpec, origin: str) -> np.ndarray:
    """Accept (N, *shape[1:]) or a single (*shape) sample; check dtype and values."""
    shape = _static_shape(spec)
    if array.dtype == object:
        raise CalibrationError(f"{origin}: '{name}' holds Python objects; only numeric arrays are accepted")
    if array.ndim == len(shape) - 1 and tuple(array.shape) == shape[1:]:
        array = array[None]  # one sample without its batch dim
    if array.ndim != len(shape) or tuple(array.shape[1:]) != shape[1:]:
        raise CalibrationError(
            f"{origin}: samples for input '{name}' have shape {list(array.shape)}, but the model wants {list(shape)} per sample",
            hint=f"store an array of shape [N, {', '.join(str(d) for d in shape[1:])}] (N samples)",
        )
    want = np.dtype(spec.dtype)
    if array.dtype != want:
        if want.kind == "f" and array.dtype.kind in "fiu":
            array = array.astype(want)
        else:
            raise CalibrationError(f"{origin}: samples for '{name}' have dtype {array.dtype}, the model wants {want}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CalibrationError(f"{origin}: samples for '{name}' contain {bad} NaN/Inf values", hint="clean the calibration data; NaN/Inf would corrupt the quantization ranges")
    if array.shape[0] == 0:
        raise CalibrationError(f"{origin}: no samples for '{name}'")
    return np.ascontiguousarray(array)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CalibrationError(f"{path}: cannot read .npy ({exc}); object/pickled arrays are refused") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read .npy: {exc}") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise CalibrationError(f"{path}: cannot read .npz: {exc}") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise CalibrationError(f"{path}: not a valid .npz archive: {exc}") from None


def _arrays_for_inputs(found: dict[str, np.ndarray], inputs: list[TensorSpec], origin: str) -> dict[str, np.ndarray]:
    if len(inputs) == 1 and len(found) == 1:
        only = next(iter(found.values()))
        return {inputs[0].name: _fit_sample(inputs[0].name, only, inputs[0], origin)}
    missing = [s.name for s in inputs if s.name not in found]
    if missing:
        raise CalibrationError(f"{origin}: no samples for input(s) {', '.join(missing)} (found keys: {', '.join(found) or 'none'})", hint="name the arrays after the model's inputs")
    return {s.name: _fit_sample(s.name, found[s.name], s, origin) for s in inputs}


def _load_image(path: Path, spec: TensorSpec, pre: Preprocessing) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    shape = _static_shape(spec)
    if len(shape) != 4:
        raise CalibrationError(f"image calibration needs a 4-D image input; '{spec.name}' has shape {list(shape)}", hint="pass .npy/.npz samples instead")
    channels_first = pre.layout == "NCHW"
    channels = shape[1] if channels_first else shape[3]
    height, width = pre.size or ((shape[2], shape[3]) if channels_first else (shape[1], shape[2]))
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CalibrationError(f"{path}: cannot decode image: {exc}", hint="remove or replace the corrupt file") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pre.color == "BGR" and channels == 3:
        pixels = pixels[..., ::-1]
    mean = np.asarray(pre.mean[:channels] if len(pre.mean) >= channels else pre.mean[:1] * channels, np.float32)
    std = np.asarray(pre.std[:channels] if len(pre.std) >= channels else pre.std[:1] * channels, np.float32)
    pixels = (pixels * pre.scale - mean) / std
    if channels_first:
        pixels = pixels.transpose(2, 0, 1)
    if tuple(pixels.shape) != shape[1:]:
        raise CalibrationError(f"{path}: preprocessed image has shape {list(pixels.shape)}, the model wants {list(shape[1:])}", hint="check the profile's preprocessing.size/layout")
    return pixels.astype(np.dtype(spec.dtype))


def load_samples(path: Path, inputs: list[TensorSpec], pre: Preprocessing, max_samples: int | None = None) -> SampleSet:
    """Read calibration data from a .npy, a .npz, a folder of .npy/.npz files, or a folder of images."""
    path = Path(path)
    origin = str(path)
    if not path.exists():
        raise CalibrationError(f"{path}: calibration data not found")
    if path.is_file():
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise CalibrationError(f"{path}: a single .npy can only feed a one-input model; this model has {len(inputs)} inputs", hint="use a .npz with one array per input name")
            arrays = {inputs[0].name: _fit_sample(inputs[0].name, _load_npy(path), inputs[0], origin)}
        elif path.suffix == ".npz":
            arrays = _arrays_for_inputs(_load_npz(path), inputs, origin)
        else:
            raise CalibrationError(f"{path}: unsupported calibration file type '{path.suffix}'", hint="use .npy, .npz, a folder of them, or a folder of images")
    else:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        npys = [p for p in files if p.suffix in (".npy", ".npz")]
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if max_samples:
            npys, images = npys[:max_samples], images[:max_samples]
        if npys:
            per_input: dict[str, list[np.ndarray]] = {s.name: [] for s in inputs}
            for file in npys:
                found = _load_npz(file) if file.suffix == ".npz" else ({inputs[0].name: _load_npy(file)} if len(inputs) == 1 else {})
                if not found:
                    raise CalibrationError(f"{file}: a bare .npy cannot feed a multi-input model", hint="use .npz files keyed by input name")
                for name, array in _arrays_for_inputs(found, inputs, str(file)).items():
                    per_input[name].append(array)
            arrays = {name: np.concatenate(parts) for name, parts in per_input.items()}
        elif images:
            if len(inputs) != 1:
                raise CalibrationError(f"{path}: an image folder can only feed a one-input model")
            stacked = np.stack([_load_image(p, inputs[0], pre) for p in images])
            arrays = {inputs[0].name: stacked}
        else:
            raise CalibrationError(f"{path}: folder holds no .npy/.npz files and no images", hint="put calibration samples (100+ recommended) in the folder")
    if max_samples:
        arrays = {k: v[: max_samples * _batch_of(inputs)] for k, v in arrays.items()}
    counts = {len(v) for v in arrays.values()}
    if len(counts) != 1:
        raise CalibrationError(f"{path}: inputs have different sample counts {sorted(counts)}")
    batch = _batch_of(inputs)
    if counts.pop() < batch:
        raise CalibrationError(f"{path}: fewer samples than the model's batch size {batch}")
    return SampleSet(arrays, f"calibration:{path}", batch)
