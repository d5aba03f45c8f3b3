"""What edgekit runs on a device besides the runner: small POSIX-sh and Python 3.8+ snippets (stdlib only),
each passed as one quoted argument, never pasted into a command line.

Every remote command runs under DEADLINE_SH, so nothing edgekit starts on a device outlives its deadline,
even when the device's python hangs before any Python code of ours runs.
"""

from __future__ import annotations

import math
import shlex

# `sh -c DEADLINE_SH edgekit-deadline SECONDS ARGV...`: runs ARGV, sends it SIGTERM after SECONDS and
# SIGKILL 5 s later. Uses `timeout` (coreutils, busybox >= 1.35) where it takes -k; otherwise a shell
# watchdog that does the same. ARGV keeps the channel as its stdin (the run's guard watches it).
DEADLINE_SH = r"""d=$1; shift
if timeout -k 5 1 true 2>/dev/null; then exec timeout -k 5 "$d" "$@"; fi
exec 3<&0
"$@" 0<&3 3<&- &
c=$!
exec 3<&-
( trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$d" </dev/null >/dev/null 2>&1 & s=$!
  wait "$s" || exit 0
  kill -TERM "$c" 2>/dev/null
  for i in 1 2 3 4 5; do kill -0 "$c" 2>/dev/null || exit 0; sleep 1; done
  kill -KILL "$c" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
w=$!
wait "$c"; r=$?
kill "$w" 2>/dev/null
exit "$r"
"""
# Exit statuses of a command DEADLINE_SH ended: timeout's 124, or killed by SIGTERM / SIGKILL.
DEADLINE_EXITS = frozenset({124, 137, 143})
DEADLINE_KILL_AFTER = 5

# argv: PATH. Prints "BYTES SHA256" (exit 2 if PATH is missing): the same tree hash as edgekit.fsutil.sha256_tree (files and folders).
REMOTE_HASH = r"""
import hashlib, os, sys
def file_hash(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
root = sys.argv[1]
if not os.path.exists(root):
    sys.stderr.write('EDGEKIT_NO_SUCH_FILE %s\n' % root)
    sys.exit(2)
if os.path.isfile(root):
    print(os.path.getsize(root), file_hash(root))
else:
    digest, items, size = hashlib.sha256(), [], 0
    for folder, _, files in os.walk(root):
        for name in files:
            full = os.path.join(folder, name)
            items.append((os.path.relpath(full, root).replace(os.sep, '/'), full))
            size += os.path.getsize(full)
    for rel, full in sorted(items):
        digest.update(rel.encode() + b'\0')
        digest.update(file_hash(full).encode())
    print(size, digest.hexdigest())
"""

PROBE_PYTHON = "import sys; print('%d.%d.%d' % sys.version_info[:3]); import numpy; print(numpy.__version__)"

FREE_SPACE = "import shutil,sys; print(shutil.disk_usage(sys.argv[1]).free)"

# argv: TAR DEST. Unpacks a tar stream edgekit made from a folder artifact (.mlpackage) where SFTP is
# missing. Only plain files and folders with relative names that stay inside DEST are accepted, and
# tarfile's "data" filter is used where this Python has it.
RECEIVE_TREE = r"""
import os, sys, tarfile
source, dest = sys.argv[1], sys.argv[2]
if not os.path.isdir(dest):
    os.makedirs(dest)
with tarfile.open(source) as tar:
    members = tar.getmembers()
    for member in members:
        parts = member.name.replace('\\', '/').split('/')
        if not (member.isfile() or member.isdir()) or member.name.startswith('/') or '..' in parts:
            sys.stderr.write('refused tar member %r\n' % member.name)
            sys.exit(3)
    if hasattr(tarfile, 'data_filter'):
        tar.extractall(dest, members, filter='data')
    else:
        tar.extractall(dest, members)
os.remove(source)
"""

# argv: WORK_DIR OWNER_JSON. Lists the run folders already in WORK_DIR (their owner record, their guard
# and whether it is still alive), reads the boot id, then creates this run's folder with its owner
# record. Prints one JSON line.
HOUSEKEEPING = r"""
import json, os, sys, tempfile, time
work_dir, owner = sys.argv[1], sys.argv[2]
def load(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
def guard_alive(pid, folder):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    if not os.path.isdir('/proc/self'):
        return True
    try:
        with open('/proc/%d/stat' % pid) as handle:
            if handle.read().rsplit(')', 1)[1].split()[0] == 'Z':
                return False
        return os.path.realpath('/proc/%d/cwd' % pid) == os.path.realpath(folder)
    except (OSError, IndexError):
        return False
def boot_id():
    for path in ('/proc/sys/kernel/random/boot_id',):
        try:
            with open(path) as handle:
                return handle.read().strip() or None
        except OSError:
            pass
    return None
runs = []
if os.path.isdir(work_dir):
    for name in sorted(os.listdir(work_dir)):
        path = os.path.join(work_dir, name)
        if not name.startswith('run.') or not os.path.isdir(path) or os.path.islink(path):
            continue
        guard = load(os.path.join(path, '.edgekit-guard.json'))
        alive = bool(guard and isinstance(guard.get('guard_pid'), int) and guard_alive(guard['guard_pid'], path))
        runs.append({'path': path, 'age_s': time.time() - os.stat(path).st_mtime,
                     'owner': load(os.path.join(path, '.edgekit-run.json')), 'guard': guard, 'guard_alive': alive})
try:
    if not os.path.isdir(work_dir):
        os.makedirs(work_dir)
    run_dir = tempfile.mkdtemp(prefix='run.', dir=work_dir)
    with open(os.path.join(run_dir, '.edgekit-run.json'), 'w') as handle:
        handle.write(owner)
except OSError as exc:
    sys.stderr.write('%s\n' % exc)
    sys.exit(1)
print(json.dumps({'run_dir': run_dir, 'boot_id': boot_id(), 'now': time.time(), 'runs': runs}))
"""

# argv: JSON list of {path, guard_pid, runner_pgid, kill, remove}. Kills a run's process group and its
# guard (after checking again that the guard still runs in that folder), then removes the folder.
REAP = r"""
import json, os, shutil, signal, sys
def runs_in(pid, folder):
    if not pid:
        return False
    if not os.path.isdir('/proc/self'):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    try:
        return os.path.realpath('/proc/%d/cwd' % pid) == os.path.realpath(folder)
    except OSError:
        return False
killed = removed = 0
for run in json.loads(sys.argv[1]):
    path = run['path']
    if run.get('kill') and runs_in(run.get('guard_pid'), path):
        for target, kill in ((run.get('runner_pgid'), os.killpg), (run['guard_pid'], os.kill)):
            try:
                if target:
                    kill(target, signal.SIGKILL)
            except OSError:
                pass
        killed += 1
    if run.get('remove'):
        shutil.rmtree(path, ignore_errors=True)
        removed += not os.path.exists(path)
print(json.dumps({'killed': killed, 'removed': removed}))
"""


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def deadline_command(argv: list[str], seconds: float, cwd: str | None = None) -> str:
    """The remote command line that runs ``argv`` (in ``cwd``) and kills it on the device after ``seconds``."""
    command = f"exec sh -c {shlex.quote(DEADLINE_SH)} edgekit-deadline {max(1, math.ceil(seconds))} {quote(argv)}"
    return f"cd {shlex.quote(cwd)} && {command}" if cwd else command
