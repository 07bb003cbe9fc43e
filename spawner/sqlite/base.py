"""SQLite, with writers queueing on a file lock instead of SQLite's busy-wait.

SQLite's busy handler retries a locked database after sleeping 1, 2, 5, 10, 15,
20, 25, 25, 25, 50, 50, 100 ms: with a dozen workers claiming attempts at once the
later ones sleep far longer than the lock is held. An exclusive `flock` taken
before `BEGIN IMMEDIATE` queues them in the kernel and wakes the next one the
moment the lock is released.
"""

from __future__ import annotations

import fcntl
import os

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    _lock_fd: int | None = None
    _locked = False

    def _lock_path(self) -> str | None:
        name = str(self.settings_dict["NAME"])
        return None if self.is_in_memory_db() else name + ".writelock"

    def _start_transaction_under_autocommit(self):
        path = self._lock_path()
        if path is not None and not self._locked:
            if self._lock_fd is None:
                self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._locked = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._locked and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._locked = False

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._unlock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._unlock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._unlock()
