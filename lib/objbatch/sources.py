"""Reading the library's files: what build-jsonl sends, what validate ranks topics by, what apply-sql
compares with what was sent. A path comes from a database row that someone else may have written: it may
hold a NUL byte, or name a named pipe, a device, a folder or a file far too big. Each becomes a reason
(Skip) for its own file. Nothing here blocks on a pipe or reads more than its limit plus one byte."""

from __future__ import annotations

import os
import stat

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
