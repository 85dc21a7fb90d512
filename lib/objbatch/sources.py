"""Reading the library's files: what build-jsonl sends, what validate ranks topics by, what apply-sql
compares with what was sent. A path comes from a database row that someone else may have written: it may
hold a NUL byte, or name a named pipe, a device, a folder or a file far too big. Each becomes a reason
(Skip) for its own file. Nothing here blocks on a pipe or reads more than its limit plus one byte."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

MAX_BYTES = 830_000  # a file this big or bigger is not sent (no lecture transcript comes close)
NOT_REGULAR = {stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class Skip(Exception):
    """This file cannot be sent; the message is the reason stored in error_message. `kind` groups reasons
    (not_text, too_big, missing, unreadable, not_regular, bad_path, binary, undecodable, empty); a missing
    or unreadable file is retried once it can be read again."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


def read_bytes(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at `path` and its stat, if it holds fewer than `limit` bytes; else
    Skip. Opened without blocking (a named pipe with no writer would wait forever), checked to be a
    regular file before a byte is read, and read at most `limit` bytes: a file that grows, or a device
    behind a symlink, is never read whole."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except ValueError:
        raise Skip("file path holds a NUL byte, which no file name can; fix the row", "bad_path") from None
    except FileNotFoundError:
        raise Skip("file not found on disk (deleted, moved or on an unmounted disk)", "missing") from None
    except OSError as exc:
        raise Skip(f"file cannot be read ({exc.strerror or type(exc).__name__})", "unreadable") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = NOT_REGULAR.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise Skip(f"not a regular file ({what}); only regular files are sent", "not_regular")
        if info.st_size >= limit:
            raise Skip(too_big(info.st_size, limit), "too_big")
        data = _read_at_most(fd, limit, path)
    finally:
        os.close(fd)
    if len(data) >= limit:  # it grew since fstat, or its size is not what it holds
        raise Skip(too_big(len(data), limit, "at least "), "too_big")
    return data, info


def too_big(size: int, limit: int, prefix: str = "") -> str:
    return f"file is {prefix}{size:,} bytes; files of {limit:,} bytes or more are not sent"


def _read_at_most(fd: int, limit: int, path: str) -> bytes:
    chunks, got = [], 0
    try:
        while got < limit:
            chunk = os.read(fd, min(limit - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise Skip(f"file cannot be read ({exc.strerror or type(exc).__name__})", "unreadable") from None
    return b"".join(chunks)


def readable(path: str) -> bool:
    """Whether a file skipped as missing or unreadable can be read again (a NUL byte: never)."""
    try:
        return os.access(path, os.R_OK)
    except ValueError:
        return False


def stat_of(path: str) -> os.stat_result | None:
    """The file's stat, or None when it cannot be had (gone, unreadable, a NUL byte in the path)."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- the library's root: what may be read

# objlib (the library's own tool) records its root in its config folder beside data/library.db.
OBJLIB_CONFIG = (("config/scanner_config.json", "library_path"), ("config/library_config.json", "library_root"))


def library_root(conn: sqlite3.Connection, db_path: str, given: str | None) -> tuple[str, str]:
    """(the folder every file read must be under, where that came from): LIBRARY_ROOT (--library-root) if
    given, else where objlib records it (its library_config table, or its config/*.json beside the
    database's folder), else the common folder of the database's rows."""
    if given and given.strip():
        return os.path.realpath(given), "LIBRARY_ROOT"
    recorded = _objlib_root(conn, Path(os.path.abspath(db_path)))
    if recorded:
        return os.path.realpath(recorded[0]), recorded[1]
    common = None
    for (path,) in conn.execute("SELECT file_path FROM files WHERE COALESCE(is_deleted, 0) = 0"):
        if isinstance(path, str) and path.startswith("/") and "\x00" not in path:
            common = os.path.dirname(path) if common is None else os.path.commonpath([common, path])
    return os.path.realpath(common or "/"), "the common folder of the database's rows; set LIBRARY_ROOT to narrow it"


def _objlib_root(conn: sqlite3.Connection, db_path: Path) -> tuple[str, str] | None:
    try:
        row = conn.execute("SELECT value FROM library_config WHERE key IN ('library_root', 'library_path') "
                           "AND value LIKE '/%' LIMIT 1").fetchone()
    except sqlite3.Error:
        row = None
    if row:
        return row[0], "the database's library_config table"
    for folder in (db_path.parent.parent, db_path.parent):
        for name, key in OBJLIB_CONFIG:
            try:  # a regular file of at most 1 MB, read without blocking (a FIFO or /dev/zero is no config)
                value = json.loads(read_bytes(str(folder / name), 1 << 20)[0]).get(key)
            except (Skip, ValueError, AttributeError):
                continue
            if isinstance(value, str) and value.startswith("/"):
                return value, f"objlib's {folder / name}"
    return None


def confined(path: str, root: str) -> str:
    """The file's real path (every symlink resolved), or Skip when that leads out of the library's root:
    a row or a symlink must not make objbatch read, and upload, ~/.ssh/id_rsa."""
    try:
        real = os.path.realpath(path)
    except ValueError:  # a NUL byte: read_bytes names it
        return path
    if real != root and os.path.commonpath([real, root]) != root:
        link = f" (a symlink leads to {real})" if real != os.path.abspath(path) else ""
        raise Skip(f"file is outside the library root {root}{link}; only files under it are read", "outside_root")
    return real
