"""Content-addressed build cache: a build whose inputs have not changed restores its artifact and
report instead of running again.

The key hashes everything that can change the result: the model and its external-data files,
the calibration data, the resolved target profile and the backend's typed options, the build options,
where verification runs, the versions of every tool in the pipeline, edgekit's own code (a hash of the
installed package's sources, not just its version number), and for backends whose artifact depends on
the machine that builds it (TensorRT) that machine's GPU, compute capability and driver and TensorRT versions.

An entry is a directory ``<cache>/<key>/`` holding the artifact file(s), ``edgekit-report.json``
and ``entry.json``. It is written whole under a temporary name and renamed into place, so a
build killed half-way leaves no entry (only a ``.tmp-*`` directory that is swept later), and of
two processes storing the same key one rename wins and the other discards its copy. An entry is
checked when it is read: every artifact file against the sha256 its report records; a corrupt entry is
removed and the build runs again, it is never served.
"""

from __future__ import annotations

import functools
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
from edgekit.fsutil import copy_item, sha256_tree, size_of

DEFAULT_MAX_BYTES = 2 * 1024**3
ENTRY_FILE = "entry.json"
STALE_TMP_SECONDS = 6 * 3600
PIPELINE_TOOLS = ("onnx", "onnxruntime", "onnxsim", "onnxslim", "numpy")
# Bump when what a build writes changes shape (report fields, artifact naming), so old entries miss.
CACHE_FORMAT = 4
_PACKAGE_DIR = Path(__file__).resolve().parent
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


def package_identity(folder: Path) -> str:
    """A hash of every file of the edgekit package in ``folder`` (sources and data such as the emulator's lock, not
    bytecode), by relative path and content. The device zipapp (``edgekit_remote.pyz``) is built from ``remote/*.py``
    of the same package, so this covers what runs on devices too."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def code_identity() -> str:
    """The identity of the edgekit code running now (hashed once per process: about a hundred small files, ~10 ms)."""
    return package_identity(_PACKAGE_DIR)


def _external_data_files(model: Path) -> list[Path]:
    """The external-data files a model names, after the load stage's safety checks (nothing outside the model's
    folder is read for the key). An unreadable or unsafe model gets no key: the load stage explains it."""
    import onnx

    from edgekit.modelio import check_external_data

    try:
        proto = onnx.load_model(str(model), load_external_data=False)
    except Exception:  # an unreadable model fails properly in the load stage
        return []
    return check_external_data(proto, model)


def build_key(model: Path, calib: Path | None, profile: dict[str, Any], options: dict[str, Any],
              tool_versions: dict[str, str], verification_place: list[str]) -> str:
    from edgekit import __version__

    digest = hashlib.sha256()
    digest.update(f"edgekit-build-v{CACHE_FORMAT}\0{__version__}\0{code_identity()}".encode())
    digest.update(sha256_tree(model).encode())
    folder = model.parent.resolve()
    for extra in _external_data_files(model):
        digest.update(extra.relative_to(folder).as_posix().encode())
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


@dataclass
class Lookup:
    """What a lookup found: a checked entry and its report, or nothing; ``dropped`` says why a corrupt entry was removed."""

    entry: CacheEntry | None = None
    report: dict[str, Any] | None = None
    dropped: str | None = None


def entry_problem(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the entry's report, None) if every artifact file matches the sha256 its report records, else (None, why not)."""
    try:
        report = json.loads((path / "edgekit-report.json").read_text())
        names = report.get("artifact_files") or [report["artifact"]]
        recorded = dict(report.get("artifact_files_sha256") or {})
        recorded.setdefault(report["artifact"], report["artifact_sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"its report cannot be read ({exc})"
    for name in names:
        file = path / name
        if not file.exists():
            return None, f"{name} is missing"
        if name not in recorded:
            return None, f"its report records no sha256 for {name}"
        actual = sha256_tree(file)
        if actual != recorded[name]:
            return None, f"{name} has sha256 {actual[:16]}…, its report says {recorded[name][:16]}…"
    return report, None


def _drop(path: Path) -> None:
    """Take an entry out of use: renamed away first (one step), then removed. On a read-only cache it stays, unused."""
    try:
        retired = Path(tempfile.mkdtemp(prefix=f".tmp-dropped-{path.name[:16]}-", dir=path.parent))
        os.rename(path, retired / path.name)
    except OSError:
        return
    shutil.rmtree(retired, ignore_errors=True)


def lookup(key: str, root: Path | None = None) -> Lookup:
    """The entry for ``key`` if there is one and it is intact; a corrupt one is removed and reported in ``dropped``."""
    path = (root or cache_dir()) / key
    if not path.is_dir():
        return Lookup()
    entry = _entry(path)
    report, problem = entry_problem(path) if entry is not None else (None, "its entry.json cannot be read")
    if entry is None or problem is not None:
        _drop(path)
        return Lookup(dropped=f"cache entry {key[:12]} was corrupt and has been removed: {problem}")
    try:
        os.utime(entry.path / ENTRY_FILE)  # last use, for eviction
    except OSError:
        pass  # a read-only cache still serves its entries
    return Lookup(entry, report)


def copy_files(entry: CacheEntry, files: list[str], folder: Path) -> None:
    """Copy the entry's artifact files into ``folder`` (a staging folder: publishing is the caller's)."""
    for name in files:
        copy_item(entry.path / name, folder / name)


def store(key: str, files: list[Path], report_json: str, summary: dict[str, Any], root: Path | None = None,
          replace: bool = False) -> Path | None:
    """Write an entry atomically; returns its path, or None if another process stored it first.

    ``replace`` swaps out an existing entry (``--no-cache`` refreshes it). A cache that cannot be written
    (full disk, read-only folder) raises OSError; the caller reports it and keeps the build."""
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    if final.exists() and not replace:
        return None
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=root))
    try:
        total = 0
        for file in files:
            copy_item(file, staging / file.name)
            total += size_of(staging / file.name)
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
