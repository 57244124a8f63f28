"""A bot's family: the process that called ``init()`` (the root) and every process descended from it.

The family shares one exporter, reached through one private directory (0700, under ``$XDG_RUNTIME_DIR`` or the
temporary directory) that holds the exporter's socket and a lock. Whoever notices the exporter is gone or wedged
takes the lock and either finds a replacement someone else started or starts it: one exporter per family after
any fault, and the directory is reused, never leaked per fault. The last exporter to leave removes it.

Membership is decided by the kernel, not by what a message claims: a connection's ``SO_PEERCRED`` gives the
sender's pid and uid; the exporter accepts it when the uid is its own and the pid is the root or descends from it
(``/proc/<pid>/stat``, parent by parent). Another local process of the same user that finds the socket is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from typing import Final

PREFIX: Final = "qt-telemetry-"
SOCKET_NAME: Final = "exporter.sock"
LOCK_NAME: Final = "lock"
ROOT_NAME: Final = "root"
#: How far up the process tree membership is looked for.
MAX_DEPTH: Final = 64
_CREDENTIALS = struct.Struct("3i")


def base_directory() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return runtime
    return tempfile.gettempdir()


def create(root_pid: int) -> str:
    """A new private family directory (0700) for ``root_pid``; stale ones of dead roots are swept first."""
    base = base_directory()
    sweep(base)
    directory = tempfile.mkdtemp(prefix=f"{PREFIX}{root_pid}-", dir=base)
    with open(os.path.join(directory, ROOT_NAME), "w") as f:
        f.write(str(root_pid))
    return directory


def sweep(base: str) -> None:
    """Remove family directories whose root is gone and whose exporter socket answers no one (both killed)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(PREFIX):
            continue
        directory = os.path.join(base, name)
        try:
            if os.stat(directory).st_uid != os.getuid():
                continue
            with open(os.path.join(directory, ROOT_NAME)) as f:
                root = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if root and _exists(root):
            continue
        if _answers(os.path.join(directory, SOCKET_NAME)):
            continue
        shutil.rmtree(directory, ignore_errors=True)


def remove(directory: str) -> None:
    """The last exporter leaving: the socket, lock and root files and the directory itself."""
    for name in (SOCKET_NAME, LOCK_NAME, ROOT_NAME):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(directory)


@contextlib.contextmanager
def locked(directory: str, timeout: float) -> Iterator[bool]:
    """Hold the family's lock (yields False when it could not be had within ``timeout``: go on unlocked)."""
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield False
        return
    deadline = time.monotonic() + timeout
    got = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
        yield got
    finally:
        if got:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket connection, as the kernel recorded them."""
    pid, uid, _gid = _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         _CREDENTIALS.size))
    return pid, uid


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def descends_from(pid: int, root: int) -> bool:
    """``pid`` is ``root`` or one of its descendants (at most :data:`MAX_DEPTH` generations down)."""
    current: int | None = pid
    for _ in range(MAX_DEPTH):
        if current == root:
            return True
        if current is None or current <= 1:
            return False
        current = parent_of(current)
    return False


def state_of(pid: int) -> str | None:
    """The process state letter from ``/proc`` (``R``, ``S``, ``T`` stopped, ``Z`` zombie ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def _exists(pid: int) -> bool:
    return state_of(pid) not in (None, "Z", "X")


def _answers(address: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(0.2)
        sock.connect(address)
        return True
    except OSError:
        return False
    finally:
        sock.close()
