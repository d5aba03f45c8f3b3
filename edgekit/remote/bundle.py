"""Pack this package into one zipapp (``edgekit_remote.pyz``): what a device receives, as a single file.

Runs on the host, but is stdlib-only like the rest of the package. The archive is deterministic (sorted
names, fixed timestamps), so its sha256 depends only on the code: an upload is checked against it.
"""

import io
import zipfile
from pathlib import Path

BUNDLE_NAME = "edgekit_remote.pyz"
PACKAGE = "edgekit_remote"
_HERE = Path(__file__).resolve().parent
_MAIN = "import sys\nfrom edgekit_remote.runner import main\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def bundle_bytes():
    """The zipapp's bytes: ``__main__.py`` plus every module of this package under ``edgekit_remote/``."""
    members = [("__main__.py", _MAIN.encode())]
    for path in sorted(_HERE.glob("*.py")):
        if path.name != "__main__.py":
            members.append(("%s/%s" % (PACKAGE, path.name), path.read_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return b"#!/usr/bin/env python3\n" + buffer.getvalue()


def write_bundle(folder):
    """Write the zipapp into ``folder``; returns its path."""
    path = Path(folder) / BUNDLE_NAME
    path.write_bytes(bundle_bytes())
    return path
