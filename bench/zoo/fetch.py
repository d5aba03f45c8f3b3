"""Fetch step: `pip download` the pinned wheels (PyPI only, never a model hub or URL), check their
sha256, and extract the manifest's files from them. Idempotent: files already there with the right
sha256 are kept."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bench.zoo.manifest import LIGHT_DIR, LIGHT_MODELS, ONNX_VERSION, WHEELS, ManifestMismatch, Wheel, check_sha256

PIP_TIMEOUT_S = 600


class FetchError(RuntimeError):
    """pip could not download a pinned wheel, or a wheel lacks a file the manifest names."""


@dataclass
class Fetched:
    files: dict[str, Path]  # "<wheel key>/<member>" or "onnx/<light file>" -> extracted path
    seconds: float
    downloaded: list[str]  # wheels that were not in the cache


def _sha_ok(path: Path, expected: str) -> bool:
    try:
        check_sha256(path, expected, path.name)
    except ManifestMismatch:
        return False
    return True


def download(wheel: Wheel, wheels_dir: Path) -> bool:
    """Download ``wheel`` into ``wheels_dir`` unless a good copy is there; True if it downloaded."""
    target = wheels_dir / wheel.filename
    if target.is_file() and _sha_ok(target, wheel.sha256):
        return False
    target.unlink(missing_ok=True)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--dest", str(wheels_dir), wheel.requirement]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise FetchError(f"pip download {wheel.requirement} failed (exit {done.returncode}); the zoo needs PyPI:\n{tail}")
    if not target.is_file():
        raise FetchError(f"pip download {wheel.requirement} did not write {wheel.filename}; found {sorted(p.name for p in wheels_dir.iterdir())}")
    check_sha256(target, wheel.sha256, f"wheel {wheel.filename}")
    return True


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise FetchError(f"refusing wheel member with an unsafe path: {name!r}")
    return path


def extract(wheel_path: Path, wheel: Wheel, dest: Path) -> dict[str, Path]:
    """Extract only the manifest's members, each checked against its sha256; never trust member paths."""
    from edgekit.fsutil import atomic_path

    out: dict[str, Path] = {}
    with zipfile.ZipFile(wheel_path) as archive:
        names = set(archive.namelist())
        for member, digest in wheel.members.items():
            target = dest.joinpath(*_safe_member(member).parts)
            if not (target.is_file() and _sha_ok(target, digest)):
                if member not in names:
                    raise FetchError(f"{wheel.filename} has no {member}")
                info = archive.getinfo(member)
                if info.is_dir() or info.file_size > 1 << 30:
                    raise FetchError(f"{wheel.filename}: {member} is not a regular file of sane size")
                with atomic_path(target) as tmp, archive.open(info) as source, open(tmp, "wb") as sink:
                    while block := source.read(1 << 20):
                        sink.write(block)
                check_sha256(target, digest, f"{wheel.filename}:{member}")
            out[member] = target
    return out


def light_models() -> dict[str, Path]:
    """The onnx package's light models, from the installed onnx (pinned in constraints.txt)."""
    import onnx

    if onnx.__version__ != ONNX_VERSION:
        raise ManifestMismatch(f"the zoo pins onnx {ONNX_VERSION} for its light models; this environment has {onnx.__version__} "
                               "(install with -c constraints.txt, or update bench/zoo/manifest.py on purpose)")
    folder = Path(onnx.__file__).resolve().parent / LIGHT_DIR
    out = {}
    for name, digest in LIGHT_MODELS.items():
        path = folder / name
        if not path.is_file():
            raise FetchError(f"onnx {onnx.__version__} does not ship {LIGHT_DIR}/{name}")
        check_sha256(path, digest, f"onnx/{LIGHT_DIR}/{name}")
        out[name] = path
    return out


def fetch(zoo: Path, packages: list[str] | None = None) -> Fetched:
    started = time.perf_counter()
    files: dict[str, Path] = {}
    downloaded = []
    for key, wheel in WHEELS.items():
        if packages is not None and key not in packages:
            continue
        if download(wheel, zoo / "wheels"):
            downloaded.append(wheel.filename)
        for member, path in extract(zoo / "wheels" / wheel.filename, wheel, zoo / "extracted" / key).items():
            files[f"{key}/{member}"] = path
    for name, path in light_models().items():
        files[f"onnx/{name}"] = path
    return Fetched(files, round(time.perf_counter() - started, 3), downloaded)
