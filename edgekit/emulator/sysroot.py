"""Build an emulator sysroot: the one edgekit command that downloads (``edgekit emulator setup``).

What it fetches is pinned in ``<arch>.lock.json``: Debian packages (a Python and the libraries it and
the runtimes' .so files need) by pool path and sha256, and the runtimes' wheels (numpy, ncnn, a TFLite
runtime) by version and sha256. Debian packages are unpacked with ``dpkg-deb -x`` (no maintainer
scripts, no root, the host's apt state untouched); wheels go through the host's pip into the
sysroot's dist-packages. The folder is built under a temporary name and renamed into place only
after the emulated Python has imported every runtime, so a half-finished setup is never used.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.emulator import MANIFEST, SYSROOT, Emulator, EmulatorSpec, emulator_root, find_emulator, find_qemu, qemu_facts, spec_for
from edgekit.errors import DeviceError, MissingDependency, ToolError, tail
from edgekit.fsutil import atomic_path, sha256_file

DEFAULT_MIRRORS = {"debian": "https://deb.debian.org/debian", "debian-security": "https://deb.debian.org/debian-security"}
DOWNLOAD_TIMEOUT = 120
SITE_PACKAGES = "usr/lib/python3/dist-packages"  # on the Debian interpreter's default sys.path
Log = Callable[[str], None]


def setup(arch: str, *, root: Path | None = None, force: bool = False, mirrors: dict[str, str] | None = None,
          log: Log = lambda _: None) -> tuple[Emulator, bool]:
    """Build the sysroot for ``arch`` (or reuse a finished one); returns it and whether it was built now."""
    spec = spec_for(arch)
    qemu = find_qemu(spec)  # before any download: without qemu the sysroot is useless
    for tool, package in (("dpkg-deb", "dpkg"),):
        if shutil.which(tool) is None:
            raise MissingDependency(f"'{tool}' is not installed; the emulator setup unpacks Debian packages with it",
                                    hint=f"sudo apt-get install {package}")
    root = root or emulator_root()
    root.mkdir(parents=True, exist_ok=True)
    with _setup_lock(root / f".{arch}.setup.lock", log):
        if not force and (root / arch / MANIFEST).is_file():
            return find_emulator(arch, root), False
        _sweep_partials(root, arch)
        started = time.perf_counter()
        lock = spec.lock()
        with atomic_path(root / arch) as building:
            manifest = _build(spec, lock, building, qemu, {**DEFAULT_MIRRORS, **(mirrors or {})}, log)
            manifest["setup_seconds"] = round(time.perf_counter() - started, 1)
            (building / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return find_emulator(arch, root), True


@contextlib.contextmanager
def _setup_lock(path: Path, log: Log) -> Iterator[None]:
    """Two setups of one architecture never build at once; the second reuses the first's result."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log("another setup of this emulator is running; waiting for it")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _sweep_partials(root: Path, arch: str) -> None:
    """Folders a killed setup left behind (atomic_path's temporaries); safe under the setup lock."""
    for stale in root.glob(f".{arch}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(spec: EmulatorSpec, lock: dict[str, Any], folder: Path, qemu: str, mirrors: dict[str, str], log: Log) -> dict[str, Any]:
    folder.mkdir()
    sysroot, downloads = folder / SYSROOT, folder / "downloads"
    sysroot.mkdir()
    downloads.mkdir()
    debs = _fetch_debs(lock["debian"]["packages"], downloads, mirrors, log)
    log(f"unpacking {len(debs)} packages into {sysroot}")
    for entry, path in debs:
        _run(["dpkg-deb", "-x", str(path), str(sysroot)], f"unpacking {entry['name']}")
    packages = [{**_identity(e), "sha256": sha256_file(p), "bytes": p.stat().st_size} for e, p in debs]
    wheels = _install_wheels(spec, lock, downloads, sysroot / SITE_PACKAGES, log)
    shutil.rmtree(downloads)
    python = lock["python"]["executable"]
    log(f"checking the emulated Python ({spec.default_cpu}): importing every runtime")
    probe = _probe(Emulator(spec, folder, {"python": {"executable": python}}), spec.default_cpu)
    missing = [module for module in lock["modules"] if not _probe_has(probe, module)]
    if missing:
        raise ToolError(f"the emulated Python could not import {', '.join(missing)}: {probe.get('errors') or 'no reason given'}",
                        hint="report this with the output of 'edgekit --debug emulator setup'")
    return {
        "arch": spec.arch,
        "edgekit_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "lock_sha256": sha256_file(spec.lock_path),
        "qemu": {"path": qemu, "version": qemu_facts(qemu)[0]},
        "python": {"executable": python, "version": probe["python"]},
        "debian": {"suite": lock["debian"]["suite"], "architecture": spec.debian_arch,
                   "packages": packages},
        "wheels": wheels,
        "runtimes": {k: v for k, v in probe["runtimes"].items() if v},
        "numpy": probe.get("numpy"),
        "sysroot_bytes": _tree_bytes(sysroot),
    }


def _identity(entry: dict[str, Any]) -> dict[str, Any]:
    return {"name": entry["name"], "version": entry["version"], "path": entry["path"]}


def _fetch_debs(packages: list[dict[str, Any]], folder: Path, mirrors: dict[str, str], log: Log) -> list[tuple[dict[str, Any], Path]]:
    total = sum(p["size"] for p in packages)
    log(f"downloading {len(packages)} Debian packages ({total / 1e6:.1f} MB) from {', '.join(sorted({mirrors[p['archive']] for p in packages}))}")
    fetched = []
    for index, package in enumerate(packages, 1):
        url = f"{mirrors[package['archive']].rstrip('/')}/{package['path']}"
        target = folder / urllib.parse.unquote(Path(package["path"]).name)
        log(f"[{index}/{len(packages)}] {package['name']} {package['version']} ({package['size'] / 1e6:.2f} MB)")
        _download(url, target, package["sha256"], package["name"], package["version"])
        fetched.append((package, target))
    return fetched


def _download(url: str, target: Path, sha256: str, name: str, version: str) -> None:
    for attempt in (1, 2):
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(target, "wb") as handle:
                shutil.copyfileobj(response, handle, 1 << 20)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise ToolError(f"{url}: not on the mirror (HTTP 404): Debian removed {name} {version}, which this edgekit's lock pins",
                                hint="upgrade edgekit, regenerate the lock with tools/emulator_lock.py, or pass --mirror with a "
                                     "snapshot.debian.org URL from the lock's date") from None
            error: Exception = exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            error = exc
        if attempt == 2:
            raise ToolError(f"downloading {url} failed: {error}", hint="check the network (or a proxy: https_proxy), then run the setup again")
    got = sha256_file(target)
    if got != sha256:
        raise ToolError(f"{url}: sha256 {got[:16]}… does not match the pinned {sha256[:16]}…; nothing was installed",
                        hint="the mirror served a different file: retry, or use another --mirror")


def _install_wheels(spec: EmulatorSpec, lock: dict[str, Any], downloads: Path, site: Path, log: Log) -> list[dict[str, Any]]:
    """pip download (hash-checked) for the emulated platform, then pip install --target into the sysroot."""
    wheels, python = lock["wheels"], lock["python"]
    lines = [f"{w['name']}=={w['version']} --hash=sha256:{w['sha256']}" for w in wheels]
    requirements = downloads / "requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")
    platform = ["--only-binary=:all:", "--python-version", python["version"], "--implementation", "cp",
                "--abi", python["abi"], *[arg for tag in sorted({t for w in wheels for t in w["platforms"]}) for arg in ("--platform", tag)]]
    log(f"downloading {len(wheels)} wheels for {spec.arch} with pip: " + ", ".join(f"{w['name']} {w['version']}" for w in wheels))
    _pip(["download", "--no-deps", "--require-hashes", "-r", str(requirements), "-d", str(downloads / "wheels"), *platform], "pip download")
    files = sorted((downloads / "wheels").glob("*.whl"))
    log(f"installing them into {site}")
    site.mkdir(parents=True, exist_ok=True)
    _pip(["install", "--no-deps", "--no-index", "--no-compile", "--target", str(site), *platform, *map(str, files)], "pip install")
    return [{"file": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files]


def _pip(args: list[str], what: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    _run([sys.executable, "-m", "pip", *args], what, env=env)


def _run(argv: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise MissingDependency(f"{argv[0]} is not installed ({what})") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise ToolError(f"{what} failed (exit {result.returncode}):\n{tail(result.stderr or result.stdout, 12)}")
    return result


def _probe(emulator: Emulator, cpu: str) -> dict[str, Any]:
    """The remote probe, run by the emulated Python (what `edgekit devices check` shows for a board)."""
    from edgekit.transport.emulated import EmulatedTransport
    from edgekit.verify import probe

    try:
        return probe(EmulatedTransport(emulator.spec.arch, cpu=cpu, emulator=emulator), timeout=600)
    except DeviceError as exc:
        raise ToolError(f"the emulated Python did not run: {exc.message}") from None


def _probe_has(probe: dict[str, Any], module: str) -> bool:
    return bool(probe.get("numpy")) if module == "numpy" else bool(probe["runtimes"].get(module))


def _tree_bytes(folder: Path) -> int:
    """Bytes on disk of a tree, symlinks counted as links (the sysroot's point into itself and /etc)."""
    return sum(os.lstat(os.path.join(here, name)).st_size for here, _, names in os.walk(folder) for name in names)
