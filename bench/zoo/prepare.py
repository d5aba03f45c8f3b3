"""fetch -> sample data -> exports: everything a zoo build needs, cached in $EDGEKIT_ZOO_DIR.

Sample data: per dataset, CALIBRATION + VERIFICATION independent draws from one seeded generator, written as
``calib.npz`` (the first 64) and ``verify.npz`` (the last 16, never used for calibration), one array per input
name with axis 0 = samples.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.zoo import zoo_dir
from bench.zoo.export import export_and_check, mtcnn_module, speaker_encoder
from bench.zoo.fetch import fetch
from bench.zoo.models import MODELS, Dataset, ZooModel

CALIBRATION, VERIFICATION = 64, 16


@dataclass
class Prepared:
    model: ZooModel
    onnx: Path
    calib: Path
    verify: Path
    seconds: dict[str, float]
    export: dict | None = None

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {self.model.input_name: self.model.input_shape}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from edgekit.fsutil import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def dataset_files(zoo: Path, dataset: Dataset, input_name: str) -> tuple[Path, Path, float]:
    """calib.npz and verify.npz for ``dataset`` keyed by ``input_name``; regenerated only when missing or stale."""
    folder = zoo / "data" / f"{dataset.name}-{input_name.replace('/', '_')}"
    stamp = {"dataset": dataset.name, "version": dataset.version, "seed": dataset.seed, "input": input_name,
             "calibration": CALIBRATION, "verification": VERIFICATION, "describe": dataset.describe}
    calib, verify, meta = folder / "calib.npz", folder / "verify.npz", folder / "meta.json"
    if calib.is_file() and verify.is_file() and meta.is_file() and json.loads(meta.read_text()) == stamp:
        return calib, verify, 0.0
    started = time.perf_counter()
    samples = dataset.make(np.random.default_rng(dataset.seed), CALIBRATION + VERIFICATION).astype(np.float32)
    if not np.isfinite(samples).all() or float(samples.std()) == 0.0:
        raise RuntimeError(f"dataset {dataset.name}: generated samples are not finite or constant")
    folder.mkdir(parents=True, exist_ok=True)
    _write_npz(calib, {input_name: samples[:CALIBRATION]})
    _write_npz(verify, {input_name: samples[CALIBRATION:]})
    meta.write_text(json.dumps(stamp, indent=2))
    return calib, verify, round(time.perf_counter() - started, 3)


def _torch_module(model: ZooModel, files: dict[str, Path]):
    if model.source.startswith("export:mtcnn:"):
        return mtcnn_module(files["facenet-pytorch/facenet_pytorch/models/mtcnn.py"], files[model.weights[0]], model.source.rsplit(":", 1)[1])
    return speaker_encoder(files["resemblyzer/resemblyzer/hparams.py"], files[model.weights[0]])


def _export(zoo: Path, model: ZooModel, files: dict[str, Path], calib: Path, verify: Path) -> tuple[Path, dict | None, float]:
    path = zoo / "export" / f"{model.name}.onnx"
    stamp_path = path.with_suffix(".json")
    from edgekit.fsutil import sha256_file

    inputs = [sha256_file(files[w]) for w in model.weights] + [sha256_file(calib), sha256_file(verify)]
    if path.is_file() and stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("inputs") == inputs and stamp.get("onnx_sha256") == sha256_file(path):
            return path, stamp["check"], 0.0
    started = time.perf_counter()
    samples = np.concatenate([np.load(calib)[model.input_name], np.load(verify)[model.input_name]])
    check = export_and_check(_torch_module(model, files), model.input_name, list(model.outputs), samples, path)
    stamp_path.write_text(json.dumps({"inputs": inputs, "onnx_sha256": sha256_file(path), "check": check}, indent=2))
    return path, check, round(time.perf_counter() - started, 3)


def prepare(names: list[str] | None = None, zoo: Path | None = None) -> list[Prepared]:
    """Fetch (cached), write sample data, export the PyTorch models; one Prepared per model, in catalog order."""
    zoo = zoo or zoo_dir()
    chosen = [MODELS[n] for n in (names or list(MODELS))]
    packages = {m.source.split("/", 1)[0] for m in chosen if not m.source.startswith(("export:", "onnx/"))}
    packages |= {"facenet-pytorch" for m in chosen if m.source.startswith("export:mtcnn")}
    packages |= {"resemblyzer" for m in chosen if m.source == "export:resemblyzer"}
    fetched = fetch(zoo, sorted(packages))
    out = []
    for model in chosen:
        calib, verify, data_s = dataset_files(zoo, model.dataset, model.input_name)
        seconds = {"fetch": fetched.seconds, "data": data_s}
        check = None
        if model.source.startswith("export:"):
            onnx_path, check, seconds["export"] = _export(zoo, model, fetched.files, calib, verify)
        else:
            onnx_path = fetched.files[model.source]
        out.append(Prepared(model, onnx_path, calib, verify, seconds, check))
    return out
