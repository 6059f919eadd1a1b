"""One trainer per run directory: an advisory lock on ``<out>/.lock``.

Two trainers writing to the same ``--out`` would interleave their logs, overwrite each other's
checkpoints and delete each other's temporary files. :class:`RunLock` makes the second one refuse
with a message naming the holder (pid, host, start time).

On POSIX the lock is an ``flock`` on the lock file, which the kernel drops when the holder exits
or is killed, so a lock left behind by a dead process is taken over without any guessing. Where
``flock`` is unavailable, the lock file is created exclusively and a file whose pid no longer runs
on this host is taken over as stale.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..errors import OutputError, RunLockedError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else
    return True


def _describe(holder: Dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    since = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"pid {pid} on host {host}{when}"


class RunLock:
    """Exclusive lock of a run directory, held from :meth:`acquire` to :meth:`release`.

    Args:
        directory: the run directory (created if missing).

    Use as ``with RunLock(out): ...`` or call :meth:`acquire` / :meth:`release`. ``took_over``
    holds the previous holder's record when a stale lock was taken over, else ``None``.

    Raises:
        RunLockedError: another live process holds the directory; the message names it.
        OutputError: the directory cannot be created or written (e.g. ``directory`` is a file).
    """

    def __init__(self, directory: Union[str, "os.PathLike[str]"]):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.took_over: Optional[Dict[str, Any]] = None
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def read_holder(self) -> Dict[str, Any]:
        """The record (``pid``, ``host``, ``started``) in the lock file, or ``{}``."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError`; returns ``self``."""
        if self.held:
            return self
        if self.directory.exists() and not self.directory.is_dir():
            raise OutputError(f"the output directory {self.directory} is a file; a run needs a directory (choose another --out)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the output directory {self.directory}: {e.strerror or e}") from None
        if fcntl is not None:
            self._acquire_flock()
        else:  # pragma: no cover - Windows
            self._acquire_exclusive()
        return self

    def _acquire_flock(self) -> None:
        for _ in range(10):  # retry if the file was replaced between open and lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write the lock file {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = self.read_holder()
                raise RunLockedError(
                    f"{self.directory} is in use by another trainer ({_describe(holder)}); wait for it to finish or stop it, "
                    "or choose another output directory"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self.read_holder()
            if previous and previous.get("pid") != os.getpid():
                self.took_over = previous  # its holder is gone: the kernel dropped its flock
            self._fd = fd
            self._write_record()
            return
        raise RunLockedError(f"could not lock {self.directory}: the lock file keeps changing")  # pragma: no cover

    def _acquire_exclusive(self) -> None:  # pragma: no cover - Windows
        for _ in range(2):
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self._write_record()
                return
            except FileExistsError:
                holder = self.read_holder()
                pid = holder.get("pid")
                stale = holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)
                if not stale:
                    raise RunLockedError(
                        f"{self.directory} is in use by another trainer ({_describe(holder)}); wait for it to finish or "
                        f"stop it, or choose another output directory (delete {self.path} if that process is gone)"
                    ) from None
                self.took_over = holder
                self.path.unlink(missing_ok=True)
        raise RunLockedError(f"could not lock {self.directory}")

    def _write_record(self) -> None:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, record)
        try:
            os.fsync(self._fd)
        except OSError:
            pass

    def release(self) -> None:
        """Drop the lock (and remove the lock file). Safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink()
        except OSError:
            pass
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release() must not keep the run locked
        try:
            self.release()
        except Exception:
            pass
