"""Publishing a build into its output folder so that no reader ever sees two builds mixed.

A build's visible files are its artifact (one file, or several that only work together: an ncnn ``.param``
and ``.bin``, a calibration table; a Core ML ``.mlpackage`` folder), ``edgekit-report.json``, which records the
sha256 of every artifact file, and ``report.html``. The names are fixed by the model and precision, so a
rebuild overwrites the previous build's files, and no filesystem renames several files at once. They are
therefore written whole into a staging folder inside the output folder (same filesystem: moves are renames),
fsync'd, and published in this order:

1. Artifact files whose bytes equal the file already in place are left untouched.
2. If any artifact file changes, the old ``edgekit-report.json`` (then ``report.html``) is renamed out of sight.
3. The changed artifact files are renamed into place, one by one.
4. ``report.html``, then ``edgekit-report.json`` is renamed into place: this rename is the commit.

Why a reader never trusts a mix: the claim is that whenever ``edgekit-report.json`` is visible, every file it
names holds exactly the bytes it records. Before step 2 the visible report is the old one and none of its files
has changed (step 1 only compares). Step 2 removes it in one rename before step 3 touches any file, so while
the files are being swapped there is no report at all. Step 4 brings the new report in with one rename, after
every file it names is in place, and files skipped in step 1 hold the same bytes by construction. A crash at any
point (SIGKILL, power loss: the staged files and the folder are fsync'd) leaves the old build, the new build, or
artifact files with no report, which ``edgekit verify`` refuses and the next build replaces. When no artifact byte
changes (a deterministic rebuild), steps 2 and 3 do nothing: the earlier artifact is never touched, and the
reports are swapped in one rename. SIGINT and SIGTERM are held off for the few renames of steps 2 to 4, so an
interrupt lets the publish finish first; only SIGKILL or power loss can stop it halfway.

Not covered: two builds publishing into one output folder at the same moment (give each its own ``--out``), and
readers that load the artifact files without the report (nothing can make several fixed names change at once).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from edgekit.fsutil import fsync_dir, fsync_tree, interrupts_deferred, sha256_tree

REPORT_NAME = "edgekit-report.json"
HTML_NAME = "report.html"
# published in this order: the JSON, the contract, last
REPORT_FILES = (HTML_NAME, REPORT_NAME)
RETIRED = ".retired"


def _same(new: Path, old: Path) -> bool:
    if not old.exists() or old.is_symlink() or new.is_dir() != old.is_dir():
        return False
    return sha256_tree(new) == sha256_tree(old)


def _move_into_place(source: Path, target: Path, retired: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        os.replace(target, retired / target.name)  # a folder cannot be renamed over a non-empty one
    os.replace(source, target)


def publish(staging: Path, out_dir: Path, artifact_names: list[str]) -> list[str]:
    """Move ``artifact_names`` and the reports from ``staging`` into ``out_dir`` in the order argued above.

    ``staging`` must be a folder inside ``out_dir``; what is left in it (retired files, unchanged copies) is the
    caller's to remove. Returns the artifact names that changed."""
    for name in [*artifact_names, *REPORT_FILES]:
        if (staging / name).exists():
            fsync_tree(staging / name)
    changed = [name for name in artifact_names if not _same(staging / name, out_dir / name)]
    retired = staging / RETIRED
    retired.mkdir(exist_ok=True)
    with interrupts_deferred():
        if changed:
            for name in reversed(REPORT_FILES):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(out_dir / name, retired / name)
            fsync_dir(out_dir)
            for name in changed:
                _move_into_place(staging / name, out_dir / name, retired)
        for name in REPORT_FILES:
            if (staging / name).exists():
                os.replace(staging / name, out_dir / name)
        fsync_dir(out_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return changed
