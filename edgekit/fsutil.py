"""Atomic writes and hashing: a failed or interrupted build never leaves a half-written file.

Temporaries are hidden and carry the id of the process that made them (``.NAME.PID.XXXX.partial``,
``.edgekit-work-PID-XXXX``, ``.edgekit-publish-PID-XXXX``): a process killed with SIGKILL cannot clean up,
so the next build in that folder removes the ones whose process is gone (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

# .NAME.PID.RANDOM.partial (atomic_path) and .edgekit-KIND-PID-RANDOM (work and publish folders)
_TEMPORARY = re.compile(r"^\.(?:.+\.(?P<pid>\d+)\.[^.]+\.partial|edgekit-(?:work|publish)-(?P<pid2>\d+)-.+)$")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: Path) -> str:
    """Hash a file, or a directory (e.g. an .mlpackage) by its relative paths and contents."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(item).encode())
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsync'd and renamed onto it.

    Works for files and for directories (written whole, then swapped in). On any exception the
    temporary is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent))
    tmp_item = tmp / target.name
    try:
        yield tmp_item
        if tmp_item.is_file():
            with open(tmp_item, "rb+") as handle:
                os.fsync(handle.fileno())
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp_item, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_item, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def copy_item(source: Path, target: Path) -> None:
    """Copy a file, or a folder (e.g. an .mlpackage) with everything in it."""
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def remove_item(path: Path) -> None:
    """Remove a file or a folder; nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def atomic_copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        copy_item(source, tmp)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file in a folder, so that a rename that follows publishes complete bytes."""
    for item in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())


def temp_folder(folder: Path, kind: str) -> Path:
    """A new hidden folder ``.edgekit-KIND-PID-XXXX`` inside ``folder`` (same filesystem: moves out of it are renames)."""
    return Path(tempfile.mkdtemp(prefix=f".edgekit-{kind}-{os.getpid()}-", dir=folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep_stale(folder: Path) -> list[str]:
    """Remove the temporaries edgekit left in ``folder`` from processes that no longer run; returns their names."""
    removed = []
    with contextlib.suppress(OSError):
        for item in Path(folder).iterdir():
            match = _TEMPORARY.match(item.name)
            if match is None:
                continue
            pid = int(match["pid"] or match["pid2"])
            if pid == os.getpid() or _alive(pid):
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append(item.name)
    return removed


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then act on them: a few renames that must happen together
    are not cut in half by Ctrl-C. Only the main thread can set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in received:
            signal.raise_signal(sig)
