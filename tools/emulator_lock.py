#!/usr/bin/env python3
"""Resolve and pin what `edgekit emulator setup ARCH` downloads: writes edgekit/emulator/ARCH.lock.json.

    python tools/emulator_lock.py aarch64

Debian: apt-get with a private configuration (its own lists, status, sources and cache folders under a
temp dir: the host's apt state is never read or written) resolves the dependency closure of the root
packages in Debian bookworm for the target architecture; each package is pinned by pool path, version
and sha256 (from the signed index, via `apt-get download --print-uris`). Wheels: `pip download` for the
target platform; each is pinned by version, file name and sha256.

The closure is pruned at packages only maintainer scripts use (dpkg, perl, debconf, ...): the sysroot is
unpacked with dpkg-deb -x and nothing in it is configured, so they would be dead weight.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
ARCHIVES = {"debian": ("https://deb.debian.org/debian", [SUITE, f"{SUITE}-updates"]),
            "debian-security": ("https://deb.debian.org/debian-security", [f"{SUITE}-security"])}
# Only maintainer scripts and the package manager need these; the sysroot runs none of them.
PRUNED = {"dpkg", "tar", "install-info", "perl-base", "perl", "debconf", "debconf-2.0", "mime-support", "mailcap"}
TARGETS = {
    "aarch64": {
        "debian_arch": "arm64",
        # python3.11: the interpreter and its stdlib; libstdc++6: the runtimes' C++ .so files (ncnn, LiteRT).
        "roots": ["python3.11", "libstdc++6"],
        "python": {"executable": "usr/bin/python3.11", "version": "3.11", "abi": "cp311"},
        # The versions the host side is tested with (constraints.txt), so host-vs-emulated differences are
        # the architecture's kernels, not a runtime version. numpy < 2 for the runtimes' C extensions.
        "wheels": [("numpy", "1.26.4"), ("ncnn", "1.0.20261020"), ("ai-edge-litert", "2.1.0")],
        # Debian bookworm has glibc 2.36: any manylinux wheel up to that runs.
        "platforms": ["manylinux2014_aarch64", *[f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)]],
        # what the emulated Python must import before a setup counts as finished
        "modules": ["numpy", "ncnn", "ai_edge_litert"],
    },
}


def apt_environment(folder: Path, debian_arch: str) -> dict[str, str]:
    """An APT_CONFIG that points every apt path into ``folder``."""
    for sub in ("lists/partial", "archives/partial", "cache", "etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "status").write_text("")
    sources = [f"deb [arch={debian_arch} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {url} {suite} main"
               for url, suites in ARCHIVES.values() for suite in suites]
    (folder / "etc/sources.list").write_text("\n".join(sources) + "\n")
    settings = {
        "APT::Architecture": debian_arch, "Dir::State::Lists": folder / "lists", "Dir::State::Status": folder / "status",
        "Dir::Cache": folder / "cache", "Dir::Cache::Archives": folder / "archives", "Dir::Etc::SourceList": folder / "etc/sources.list",
        "Dir::Etc::SourceParts": folder / "etc/sources.list.d", "Dir::Etc::Parts": folder / "etc/apt.conf.d",
        "Dir::Etc::Preferences": folder / "etc/preferences", "Dir::Etc::PreferencesParts": folder / "etc/preferences.d",
        "APT::Sandbox::User": os.environ.get("USER") or "root", "Acquire::Languages": "none",
    }
    lines = [f'{key} "{value}";' for key, value in settings.items()] + [f'APT::Architectures {{ "{debian_arch}"; }};']
    (folder / "apt.conf").write_text("\n".join(lines) + "\n")
    return {**os.environ, "APT_CONFIG": str(folder / "apt.conf")}


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def closure(roots: list[str], env: dict[str, str]) -> list[str]:
    """Depends + Pre-Depends, first alternative of each group, pruned at PRUNED."""
    seen, queue = set(), list(roots)
    while queue:
        batch = [p for p in dict.fromkeys(queue) if p not in seen]
        queue = []
        if not batch:
            break
        seen.update(batch)
        output = run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                      "--no-replaces", "--no-enhances", *batch], env)
        in_alternatives = False
        for line in output.splitlines():
            match = re.match(r"^\s*(\|?)(PreDepends|Depends): (\S+)", line)
            if not match:
                continue
            first_of_group = not in_alternatives
            in_alternatives = match[1] == "|"  # the next line is another alternative of this group
            name = match[3]
            if not first_of_group or name in PRUNED:
                continue
            if name.startswith("<"):
                raise SystemExit(f"virtual package {name}: name a real provider in the roots")
            queue.append(name.split(":")[0])
    return sorted(seen)


def pin_debs(packages: list[str], env: dict[str, str]) -> list[dict]:
    output = run(["apt-get", "download", "--print-uris", *packages], env)
    pinned = []
    for line in output.splitlines():
        url, filename, size, checksum = line.strip().strip("'").replace("' ", " ").split()
        name, version, _ = filename[: -len(".deb")].split("_")
        archive, path = next((a, url[len(base) + 1:]) for a, (base, _) in ARCHIVES.items() if url.startswith(base + "/"))
        pinned.append({"name": name, "version": version.replace("%3a", ":"), "archive": archive, "path": path,
                       "size": int(size), "sha256": checksum.split(":", 1)[1]})
    return sorted(pinned, key=lambda p: p["name"])


def pin_wheels(config: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        platforms = [arg for tag in config["platforms"] for arg in ("--platform", tag)]
        python = config["python"]
        pinned = []
        for name, version in config["wheels"]:
            folder = Path(scratch) / name
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python["version"],
                            "--implementation", "cp", "--abi", python["abi"], *platforms, "-d", str(folder), f"{name}=={version}"], check=True)
            (wheel,) = folder.glob("*.whl")
            tags = wheel.name[: -len(".whl")].split("-")[-1].split(".")
            pinned.append({"name": name, "version": version, "file": wheel.name, "platforms": tags,
                           "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()})
    return pinned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", choices=sorted(TARGETS))
    args = parser.parse_args()
    config = TARGETS[args.arch]
    with tempfile.TemporaryDirectory(prefix="edgekit-apt-") as scratch:
        env = apt_environment(Path(scratch), config["debian_arch"])
        run(["apt-get", "update", "-q"], env)
        packages = closure(config["roots"], env)
        debs = pin_debs(packages, env)
    lock = {
        "arch": args.arch,
        "resolved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": config["python"],
        "debian": {"suite": SUITE, "architecture": config["debian_arch"], "roots": config["roots"], "pruned": sorted(PRUNED),
                   "packages": debs},
        "wheels": pin_wheels(config),
        "modules": config["modules"],
    }
    target = ROOT / "edgekit" / "emulator" / f"{args.arch}.lock.json"
    target.write_text(json.dumps(lock, indent=1) + "\n")
    print(f"{target}: {len(debs)} packages ({sum(d['size'] for d in debs) / 1e6:.1f} MB), {len(lock['wheels'])} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
