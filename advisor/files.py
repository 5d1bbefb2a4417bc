"""Files at the edge: atomic writes, and reading the user's input files safely.

Writes: a temp file in the same folder, fsync, then os.replace. A reader (or a run killed midway) sees
the old file or the new one, never half of one. Every output of tunegate goes through here, and ends
with the mode a plain ``open()`` would give it under the user's umask (mkstemp alone gives 0600).

Reads (`open_regular`, `read_regular`, `load_toml`): the user's data, config, price, rule and
system-prompt files must be regular files. A FIFO, a device or a socket is refused before anything
blocks on it (the file is opened non-blocking and checked with fstat on the same descriptor), and
every problem is a `TunegateError` naming the file: unreadable, not UTF-8, not valid TOML, nested too
deeply or holding a number too large to read.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import IO, Any

from advisor.errors import FilesError, TunegateError
from advisor.textsafe import surrogate_path

MAX_TOML_BYTES = 16 * 1024 * 1024
"""Largest config, price or rule file read (these are hand-written; a bigger one is a mistake)."""


def _umask() -> int:
    """The process umask: from /proc on Linux (reading it changes nothing), else by setting it and
    setting it back at once (os.umask can only be read that way)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EEXIST: "a file is in the way of a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
}


def os_error_reason(exc: OSError) -> str:
    """What went wrong, in words: `the disk is full`, `permission denied`, ..."""
    return _ERRNO_HINTS.get(exc.errno or -1) or exc.strerror or str(exc)


def os_error_message(exc: OSError) -> str:
    """`path: reason` for an OSError, e.g. `runs/x/report.md: the disk is full`."""
    if exc.filename is None:
        return f"cannot read or write a file: {os_error_reason(exc)}"
    return f"{exc.filename}: {os_error_reason(exc)}"


def ensure_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create `path` (and its parents) as a folder; `FilesError` naming it when that is impossible."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FilesError(f"the {what} is a file, not a folder", file=str(p))
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FilesError(f"cannot create the {what}: {os_error_reason(exc)}", file=str(p)) from None
    return p


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` as UTF-8 atomically, mode 0666 less the umask; `FilesError` when the environment
    refuses (permission, full disk, read-only), with nothing left behind."""
    path = Path(path)
    data = text.encode("utf-8")  # before touching the disk: text that is not valid Unicode fails here
    ensure_dir(path.parent)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise FilesError(f"cannot write: {os_error_reason(exc)}", file=str(path)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_text(obj: Any, *, compact: bool = False) -> str:
    """JSON text (strict: NaN is refused), indented unless `compact`, ending with a newline."""
    if compact:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    else:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    return text + "\n"


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, compact: bool = False) -> Path:
    """JSON (strict: NaN is refused) written atomically; indented unless `compact`."""
    return write_text_atomic(path, json_text(obj, compact=compact))


def open_regular(path: str | os.PathLike[str], error: type[TunegateError], what: str = "file") -> IO[bytes]:
    """Open `path` for binary reading if it is a regular file; else raise `error` naming it.

    Opened with O_NONBLOCK so a FIFO cannot hang the open, then checked with fstat on the descriptor
    itself (no gap between the check and the open).
    """
    name = str(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"cannot read {what}: no such file", file=name) from None
    except IsADirectoryError:
        raise error(f"is a directory; pass a {what}", file=name) from None
    except OSError as exc:
        raise error(f"cannot open {what}: {exc.strerror or exc}", file=name) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"is a directory; pass a {what}", file=name)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"not a regular file ({_kind(st.st_mode)}); pass a {what}", file=name)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike[str], error: type[TunegateError], what: str = "file") -> None:
    """Raise `error` unless `path` is a regular file (opens nothing: a stat of the path)."""
    name = str(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise error(f"cannot read {what}: no such file", file=name) from None
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", file=name) from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"is a directory; pass a {what}", file=name)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"not a regular file ({_kind(st.st_mode)}); pass a {what}", file=name)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def read_regular(
    path: str | os.PathLike[str],
    error: type[TunegateError],
    what: str = "file",
    *,
    max_bytes: int | None = None,
) -> bytes:
    """The bytes of a regular file, read through one descriptor; `error` on any problem."""
    with open_regular(path, error, what) as fh:
        try:
            data = fh.read(max_bytes + 1 if max_bytes is not None else -1)
        except OSError as exc:
            raise error(f"cannot read {what}: {exc.strerror or exc}", file=str(path)) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{what} is larger than {max_bytes:,} bytes", file=str(path))
    return data


def read_text(path: str | os.PathLike[str], error: type[TunegateError], what: str = "file") -> str:
    """A regular file's text, which must be UTF-8 (a leading byte-order mark is dropped)."""
    data = read_regular(path, error, what, max_bytes=MAX_TOML_BYTES)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the {what} as UTF-8",
            file=str(path),
            line=line,
        ) from None


def parse_toml(text: str, name: str, error: type[TunegateError], what: str = "file") -> dict[str, Any]:
    """`tomllib.loads`, with every way it can fail (syntax, nesting, huge integers) as `error`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"invalid TOML: {exc}", file=name) from None
    except RecursionError:
        raise error(f"invalid TOML: nested too deeply for a {what}", file=name) from None
    except ValueError as exc:  # int() of thousands of digits (sys.get_int_max_str_digits)
        raise error(f"invalid TOML: a number is too large ({_first_line(exc)})", file=name) from None
    bad = surrogate_path(doc)
    if bad is not None:
        raise error(
            "holds a lone UTF-16 surrogate escape (such as \\ud800): not valid text", file=name, field=bad
        )
    return doc


def load_toml(path: str | os.PathLike[str], error: type[TunegateError], what: str = "file") -> dict[str, Any]:
    """Read and parse a TOML file that must be a regular, UTF-8 file; `error` names the file."""
    return parse_toml(read_text(path, error, what), str(path), error, what)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
