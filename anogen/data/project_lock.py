"""One writer per project: a lock file that names the process holding the project.

Two processes that both load ``project.json``, edit it and save it lose each other's
updates even though every single write is atomic. So the process that opens a project
for writing first creates ``.anogen.lock`` in the project folder, holding its pid, its
host name, the time and a random token. Another process that finds the lock
either opens the project read-only or is refused with a message naming the holder.

A lock left behind by a killed process is *stale*: when the holder ran on this host and
its pid no longer exists, the next opener takes the lock over. So is a lock copied along
with the folder (it names the folder it was taken for). A lock from another host
cannot be checked from here; the message says which file to delete if that host is gone.

Within one process the lock is re-entrant (the GUI and its tests open the same project
more than once); it is counted per folder and removed when the last holder releases it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from anogen.errors import InputError

LOCK_NAME = ".anogen.lock"
_GARBLED_GRACE_S = 10.0  # a lock file being created may be empty for a moment; older and garbled is stale


@dataclass(frozen=True)
class LockHolder:
    """Who holds a project: written as JSON into the lock file."""

    pid: int
    host: str
    since: str
    token: str
    root: str = ""  # the real path of the project folder it was taken for

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (since {self.since})"


class ProjectLockedError(InputError):
    """Another process holds the project's lock; ``holder`` says who (``None`` if unreadable)."""

    def __init__(self, root: Path, lock_path: Path, holder: LockHolder | None) -> None:
        self.root = root
        self.lock_path = lock_path
        self.holder = holder
        who = holder.describe() if holder is not None else "another process"
        super().__init__(f"project {root} is open in {who}. Close it there, or open it read-only. "
                         f"If that process is no longer running, delete {lock_path}")


class ReadOnlyProjectError(InputError):
    """A write to a project that was opened read-only."""


def current_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    query_limited_information, still_active, access_denied = 0x1000, 259, 5
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == access_denied  # type: ignore[attr-defined]
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def read_holder(lock_path: Path) -> LockHolder | None:
    """The holder written in ``lock_path``; ``None`` when the file is missing or garbled."""
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
        holder = LockHolder(pid=data["pid"], host=data["host"], since=data["since"], token=data["token"],
                            root=data.get("root", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if isinstance(holder.pid, bool) or not isinstance(holder.pid, int):
        return None
    if not all(isinstance(v, str) for v in (holder.host, holder.since, holder.token, holder.root)):
        return None
    return holder


def _create_exclusive(lock_path: Path, holder: LockHolder) -> bool:
    """Create ``lock_path`` holding ``holder``; False when it already exists.

    The content is written to a temporary file first and hard-linked into place, so the
    lock never exists half-written; ``os.link`` fails when the target exists, which makes
    the creation atomic. File systems without hard links fall back to ``O_EXCL``.
    """
    payload = json.dumps(asdict(holder)).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f"{lock_path.name}.", suffix=".tmp", dir=lock_path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, lock_path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT file systems)
            pass
        try:
            lock_fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(lock_fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _break_stale(lock_path: Path, seen: LockHolder | None) -> None:
    """Remove a stale lock, unless another process replaced it since we read it.

    The rename is atomic, so of several processes breaking the same stale lock only one
    gets the file. If the file we got is not the stale one we read (another process
    already broke it and took a fresh lock), it is put back.
    """
    grabbed = lock_path.with_name(f"{lock_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.replace(lock_path, grabbed)
    except FileNotFoundError:
        return
    try:
        if read_holder(grabbed) != seen:
            with contextlib.suppress(FileExistsError):
                os.link(grabbed, lock_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(grabbed)


@dataclass
class _Held:
    pid: int
    holder: LockHolder
    count: int


# Locks this process holds, by lock file path. A forked child inherits the dict but not
# the locks, so every entry records the pid that took it.
_HELD: dict[str, _Held] = {}
# Re-entrant: a Workspace dropped without close() releases its lock from a weakref finalizer,
# which the garbage collector may run inside acquire() on this same thread (a plain Lock hung there).
_HELD_LOCK = threading.RLock()


class ProjectLock:
    """The lock of one project folder, as held (or not) by one :class:`Workspace`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._key = os.path.realpath(self.path)
        self._real_root = os.path.realpath(self.root)
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def holder(self) -> LockHolder | None:
        """Who holds the lock now, according to the file."""
        return read_holder(self.path)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ProjectLockedError` naming the live holder."""
        if self._held:
            return
        with _HELD_LOCK:
            entry = _HELD.get(self._key)
            if entry is not None and entry.pid == os.getpid() and read_holder(self.path) == entry.holder:
                entry.count += 1
                self._held = True
                return
            host = current_host()
            seen: LockHolder | None = None
            for _ in range(5):  # each retry follows a stale lock removed or a race lost
                mine = LockHolder(pid=os.getpid(), host=host, since=time.strftime("%Y-%m-%d %H:%M:%S"),
                                  token=uuid.uuid4().hex, root=self._real_root)
                if _create_exclusive(self.path, mine):
                    _HELD[self._key] = _Held(pid=os.getpid(), holder=mine, count=1)
                    self._held = True
                    return
                seen = read_holder(self.path)
                if seen is None:
                    if self._garbled_and_old():
                        _break_stale(self.path, None)
                        continue
                    if not self.path.exists():
                        continue  # released between our two looks
                    raise ProjectLockedError(self.root, self.path, None)
                if seen.host == host and seen.pid == os.getpid():
                    # Our own pid from an earlier holder in this process whose record was
                    # lost (e.g. a registry cleared by a test): it is ours to reuse.
                    _HELD[self._key] = _Held(pid=os.getpid(), holder=seen, count=1)
                    self._held = True
                    return
                if seen.host == host and not pid_alive(seen.pid):
                    _break_stale(self.path, seen)
                    continue
                if seen.host == host and seen.root and seen.root != self._real_root:
                    # Taken for another folder: this one is a copy, made while the original
                    # was open, and nobody has this copy open.
                    _break_stale(self.path, seen)
                    continue
                raise ProjectLockedError(self.root, self.path, seen)
            raise ProjectLockedError(self.root, self.path, seen)

    def _garbled_and_old(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age > _GARBLED_GRACE_S

    def still_held(self) -> bool:
        """True when the lock file still names this process (nobody deleted or took it)."""
        if not self._held:
            return False
        with _HELD_LOCK:
            entry = _HELD.get(self._key)
            return entry is not None and entry.pid == os.getpid() and read_holder(self.path) == entry.holder

    def release(self) -> None:
        """Give the lock up; the file is removed when the last holder in this process releases it."""
        if not self._held:
            return
        self._held = False
        with _HELD_LOCK:
            entry = _HELD.get(self._key)
            if entry is None or entry.pid != os.getpid():
                return
            entry.count -= 1
            if entry.count > 0:
                return
            del _HELD[self._key]
            if read_holder(self.path) == entry.holder:  # never remove a lock another process took
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)


def release_all_held() -> None:
    """Remove every lock file this process holds (at interpreter exit)."""
    with _HELD_LOCK:
        for key, entry in list(_HELD.items()):
            if entry.pid == os.getpid() and read_holder(Path(key)) == entry.holder:
                with contextlib.suppress(OSError):
                    os.unlink(key)
            del _HELD[key]


# A process that exits normally leaves no lock behind; a killed one leaves a stale lock,
# which the next opener on this host detects from the dead pid.
atexit.register(release_all_held)
