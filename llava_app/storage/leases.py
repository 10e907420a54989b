"""Several app processes on one image store: which files each of them still uses.

Any number of app instances may share a data folder: two on one machine (the README's
remote-engine recipe runs both on the default folder), replicas on one shared disk. Each
sweeps the content-addressed store now and then, and none may delete a file that another
live instance still uses. The policy, applied by ``ImageStore.sweep``:

- **A lease per instance.** Each ``ImageStore`` keeps ``<store>/instances/<id>.json``:
  a random id, pid, host, the longest time between two rewrites (``interval_s``: 60 s,
  since the app's housekeeping sweeps at least once a minute), when it was written, and
  the hashes its live conversations use. It is written before the store takes in its
  first image, rewritten atomically (a temporary file, then a rename) by every sweep with
  what the sweep keeps, and removed on a clean exit (``atexit``). A process that sweeps
  less often than once a minute must raise ``ImageStore.leases.interval_s`` to match.
- **Fresh leases count.** A lease is fresh while it is younger than ``stale_after``
  (three intervals plus 30 s: 3.5 minutes) and, when it comes from this host and PID
  namespace, while its process is alive. A sweep keeps every hash a fresh lease names and
  removes stale leases (an instance killed with SIGKILL, a host gone).
- **Uploads a lease does not name yet.** An upload is stored up to one interval before its
  instance's next sweep names it. So a sweep also keeps every file written or reused
  within the longest ``stale_after`` of the other fresh leases: longer than any of those
  instances' intervals. With no other instance, only the sweeper's own grace applies.
- **No lost reuse.** Finding-and-refreshing (or writing) a file in ``put`` and
  checking-and-deleting it in ``sweep`` hold an exclusive ``flock`` on ``<store>/.lock``,
  so a sweep in one process never deletes a file that another has just reused.

Hosts sharing a disk need roughly synchronised clocks (leases and file times are compared
with the local clock), and a file system with ``flock`` (local disks; NFSv4 maps it to its
own locks). Where ``flock`` is missing the lock only covers the threads of one process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the lock covers this process's threads only
    fcntl = None  # type: ignore[assignment]


def stale_after(interval_s: float) -> float:
    """How long a lease written every ``interval_s`` seconds stays fresh."""
    return 3 * interval_s + 30.0


def this_host() -> str:
    """This host's name and PID namespace: where a lease's pid can be checked."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # containers on one host have pids of their own
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}".strip()


def pid_alive(pid: int) -> bool:
    """False only when this host certainly has no process ``pid``."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) sends CTRL_C_EVENT on Windows; freshness alone decides there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process
    return True


@dataclass(frozen=True)
class Lease:
    """What one instance said it uses, and when."""

    id: str
    pid: int
    host: str
    interval_s: float
    written: float
    hashes: frozenset[str]

    @property
    def stale_after(self) -> float:
        return stale_after(self.interval_s)


class Leases:
    """This instance's lease in ``folder``, and the fresh leases of the others there.

    Args:
        folder: the leases' folder (``<store>/instances``).
        interval_s: the longest time between two rewrites of this lease (its sweeps' interval, at most).
        clock: wall-clock time (tests pass a fake one).
        alive: whether a pid of this host runs (tests pass a fake one).
    """

    def __init__(self, folder: str | os.PathLike, *, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.time, alive: Callable[[int], bool] = pid_alive):
        self.folder = Path(folder)
        self.id = uuid.uuid4().hex
        self.interval_s = interval_s
        self.host = this_host()
        self._clock = clock
        self._alive = alive
        self._written = False  # and ``remove`` registered to run at exit
        self._withdrawn = False  # removed at exit: never written again
        self._write_lock = threading.Lock()  # one writer of the temporary file; ``remove`` waits for it

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.json"

    def write(self, hashes: Iterable[str]) -> None:
        """Publish the hashes this instance uses (atomically: readers see the old or the new lease)."""
        with self._write_lock:
            self._write(hashes)

    def ensure(self) -> None:
        """Write a lease unless this instance has written one: before it holds any file."""
        with self._write_lock:
            if not self._written:
                self._write(())

    def _write(self, hashes: Iterable[str]) -> None:
        if self._withdrawn:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"id": self.id, "pid": os.getpid(), "host": self.host, "interval_s": self.interval_s,
                  "written": self._clock(), "hashes": sorted(hashes)}
        tmp = self.folder / f"{self.id}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)
        if not self._written:
            atexit.register(self.remove)
            self._written = True

    def remove(self) -> None:
        """Withdraw this instance's lease (a clean exit), for good.

        It runs at exit, while the housekeeping thread may still be in a sweep: a rewrite of the lease after
        the unlink would leave it behind a process that is gone (seen once in a suite run, after SIGTERM).
        The withdrawal waits for a write in progress, and no write comes after it.
        """
        with self._write_lock:
            self._withdrawn = True
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def others(self) -> list[Lease]:
        """The fresh leases of other instances; stale ones are deleted, unreadable ones left alone."""
        now = self._clock()
        fresh = []
        for path in self.folder.glob("*.json"):
            if path.stem == self.id:
                continue
            lease = _read(path)
            if lease is None:
                continue
            if self.is_fresh(lease, now):
                fresh.append(lease)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return fresh

    def is_fresh(self, lease: Lease, now: float) -> bool:
        """Written recently enough, and (on this host) by a process that still runs."""
        if now - lease.written > lease.stale_after:
            return False
        return lease.host != self.host or self._alive(lease.pid)


def _read(path: Path) -> Lease | None:
    """A lease file, or None when it is gone (withdrawn since the folder was listed) or unreadable."""
    try:
        record = json.loads(path.read_text())
        return Lease(id=str(record["id"]), pid=int(record["pid"]), host=str(record["host"]),
                     interval_s=float(record["interval_s"]), written=float(record["written"]),
                     hashes=frozenset(record["hashes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class FilesLock:
    """An exclusive lock between writers and sweeps of a store: its threads, and (``flock``) other processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> FilesLock:
        self._thread_lock.acquire()
        try:
            self._fd = _flock(self.path)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        self._thread_lock.release()


def _flock(path: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``path``; None where there is none to take."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None  # a read-only store: it deletes nothing anyway
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a file system without flock: this process's threads only
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
