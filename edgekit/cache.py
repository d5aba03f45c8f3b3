"""Content-addressed build cache: a build whose inputs have not changed restores its artifact and
report instead of running again.

The key hashes everything that can change the result: the model and its external-data files,
the calibration data, the resolved target profile, the build options, where verification runs,
and the versions of edgekit and of every tool in the pipeline.

An entry is a directory ``<cache>/<key>/`` holding the artifact file(s), ``edgekit-report.json``
and ``entry.json``. It is written whole under a temporary name and renamed into place, so a
build killed half-way leaves no entry (only a ``.tmp-*`` directory that is swept later), and of
two processes storing the same key one rename wins and the other discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit._lazy import version_of
from edgekit.fsutil import atomic_copy, sha256_tree, size_of

DEFAULT_MAX_BYTES = 2 * 1024**3
ENTRY_FILE = "entry.json"
STALE_TMP_SECONDS = 6 * 3600
PIPELINE_TOOLS = ("onnx", "onnxruntime", "onnxsim", "onnxslim", "numpy")
# Bump when what a build writes changes shape (report fields, artifact naming), so old entries miss.
CACHE_FORMAT = 3
STATE_DIR = ".state"


def user_cache(name: str) -> Path:
    """``name`` under edgekit's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgekit" / name


def cache_dir() -> Path:
    configured = os.environ.get("EDGEKIT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return user_cache("builds")


def state_dir() -> Path:
    """What edgekit remembers between runs that is not a build (e.g. each device's last boot id).
    Inside the cache folder, but never evicted or cleared with the builds."""
    return cache_dir() / STATE_DIR


def max_bytes() -> int:
    return int(os.environ.get("EDGEKIT_CACHE_MAX_BYTES", DEFAULT_MAX_BYTES))


def _external_data_files(model: Path) -> list[Path]:
    """The external-data files a model names (resolved inside its folder; the load stage re-checks them)."""
    import onnx

    try:
        proto = onnx.load_model(str(model), load_external_data=False)
    except Exception:  # an unreadable model fails properly in the load stage; here it just has no extras
        return []
    names = set()
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return [model.parent / name for name in sorted(names) if (model.parent / name).is_file()]


def build_key(model: Path, calib: Path | None, profile: dict[str, Any], options: dict[str, Any],
              tool_versions: dict[str, str], verification_place: list[str]) -> str:
    from edgekit import __version__

    digest = hashlib.sha256()
    digest.update(f"edgekit-build-v{CACHE_FORMAT}\0{__version__}".encode())
    digest.update(sha256_tree(model).encode())
    for extra in _external_data_files(model):
        digest.update(extra.name.encode())
        digest.update(sha256_tree(extra).encode())
    if calib is not None:
        digest.update(b"calib\0")
        digest.update(sha256_tree(calib).encode())  # a file, or a folder by relative name + content
    profile = {k: v for k, v in profile.items() if k != "source"}
    versions = {**{t: version_of(t) for t in PIPELINE_TOOLS}, **tool_versions}
    payload = {"profile": profile, "options": options, "tools": versions, "verify_on": verification_place}
    digest.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class CacheEntry:
    key: str
    path: Path
    bytes: int
    created: float
    last_used: float
    summary: dict[str, Any]


def _entry(path: Path) -> CacheEntry | None:
    meta = path / ENTRY_FILE
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return CacheEntry(path.name, path, int(data.get("bytes", 0)), float(data.get("created", 0)),
                      meta.stat().st_mtime, data.get("summary", {}))


def entries(root: Path | None = None) -> list[CacheEntry]:
    root = root or cache_dir()
    if not root.is_dir():
        return []
    found = [_entry(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((e for e in found if e is not None), key=lambda e: e.last_used)


def lookup(key: str, root: Path | None = None) -> CacheEntry | None:
    entry = _entry((root or cache_dir()) / key)
    if entry is not None:
        os.utime(entry.path / ENTRY_FILE)  # last use, for eviction
    return entry


def restore(entry: CacheEntry, files: list[str], out_dir: Path) -> None:
    """Copy the entry's artifact files and report into ``out_dir`` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in [*files, "edgekit-report.json"]:
        atomic_copy(entry.path / name, out_dir / name)


def store(key: str, files: list[Path], report_json: str, summary: dict[str, Any], root: Path | None = None,
          replace: bool = False) -> Path | None:
    """Write an entry atomically; returns its path, or None if another process stored it first.

    ``replace`` swaps out an existing entry (``--no-cache`` refreshes it)."""
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    if final.exists() and not replace:
        return None
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=root))
    try:
        total = 0
        for file in files:
            target = staging / file.name
            if file.is_dir():
                shutil.copytree(file, target)
            else:
                shutil.copyfile(file, target)
            total += size_of(target)
        (staging / "edgekit-report.json").write_text(report_json)
        (staging / ENTRY_FILE).write_text(json.dumps({"key": key, "bytes": total, "created": time.time(), "summary": summary}))
        for item in staging.rglob("*"):
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
        if replace and final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".tmp-old-{key[:16]}-", dir=root))
            try:
                os.rename(final, retired / key)
            except OSError:
                pass  # someone else retired it already
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:  # another process renamed its copy first: theirs is just as good
            return None
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        evict(root)


def evict(root: Path | None = None, limit: int | None = None) -> list[str]:
    """Remove least-recently-used entries until the cache is under its size limit; sweep stale temporaries."""
    root = root or cache_dir()
    limit = max_bytes() if limit is None else limit
    removed = []
    now = time.time()
    if root.is_dir():
        for item in root.iterdir():
            if item.name.startswith(".tmp-") and now - item.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(item, ignore_errors=True)
    current = entries(root)
    total = sum(e.bytes for e in current)
    for entry in current:
        if total <= limit:
            break
        shutil.rmtree(entry.path, ignore_errors=True)
        total -= entry.bytes
        removed.append(entry.key)
    return removed


def clear(root: Path | None = None) -> int:
    root = root or cache_dir()
    if not root.is_dir():
        return 0
    count = 0
    for item in root.iterdir():
        if item.is_dir() and item.name != STATE_DIR:
            count += not item.name.startswith(".")
            shutil.rmtree(item, ignore_errors=True)
    return count
