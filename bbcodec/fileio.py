"""Reading inputs and writing outputs the way gzip does; imports nothing heavy (no torch, numpy).

* ``-`` is standard input (as an input) or standard output (as an output). Binary data is never
  read from or written to a terminal.
* An output that is a regular file is written to a temporary file in the same directory and
  renamed into place, so a failure (a full disk, Ctrl-C) never leaves a partial or wrong file. An
  output that is a symlink is written through: the temporary file is made next to the link's
  target and renamed onto it, so the link stays a link. An output that is some other existing
  non-regular file (``/dev/null``, a FIFO, a terminal device) is written straight into, never
  replaced.
* New files get the input's permission bits (``mode & 0o777``), or ``0o666 & ~umask`` when the
  input is not a regular file (standard input).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from .errors import BBCodecError

STDIO = "-"
STDIN_NAME, STDOUT_NAME = "<stdin>", "<stdout>"
WRITE_BLOCK = 1 << 20


class UsageError(BBCodecError):
    """A request that cannot be carried out as asked (existing output, the input as output, ...)."""


class OutputError(BBCodecError, OSError):
    """An output that could not be written (full disk, no permission, broken pipe, ...)."""


def is_stdio(path) -> bool:
    return path is not None and str(path) == STDIO


_FD_ALIASES = {"/dev/stdout": 1, "/dev/stderr": 2}


def _fd_alias(path) -> int | None:
    """The open file descriptor a path like ``/dev/stdout`` or ``/dev/fd/3`` names, or None.
    Such outputs are written to the descriptor itself: reopening the path would lose a shell's
    append mode and offset, or replace the file it was redirected to."""
    text = str(path)
    if text in _FD_ALIASES:
        return _FD_ALIASES[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):])
    return None


def display_name(path, output: bool = False) -> str:
    if is_stdio(path):
        return STDOUT_NAME if output else STDIN_NAME
    return str(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------- inputs
def read_input(src) -> bytes:
    """The bytes of ``src`` (``-``: standard input); raises :class:`UsageError` with one line."""
    if is_stdio(src):
        stream = sys.stdin
        if stream is None:
            raise UsageError(f"{STDIN_NAME}: no standard input")
        if _isatty(stream):
            raise UsageError(f"{STDIN_NAME}: refusing to read binary data from a terminal (redirect it, or name a file)")
        try:
            return getattr(stream, "buffer", stream).read()
        except OSError as exc:
            raise UsageError(f"{STDIN_NAME}: cannot read ({_reason(exc)})") from exc
    src = Path(src)
    if src.is_dir():
        raise UsageError(f"{src}: is a directory")
    try:
        return src.read_bytes()
    except OSError as exc:
        raise UsageError(f"{src}: cannot read ({_reason(exc)})") from exc


def default_mode() -> int:
    """``0o666 & ~umask``: the permission bits a new file gets by default."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def input_mode(src) -> int:
    """The permission bits an output made from ``src`` gets: the input's (if a regular file)."""
    if not is_stdio(src):
        try:
            st = os.stat(src)
            if stat.S_ISREG(st.st_mode):
                return st.st_mode & 0o777
        except OSError:
            pass
    return default_mode()


# ---------------------------------------------------------------------------------- outputs
def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _check_stdout() -> None:
    if sys.stdout is None:
        raise UsageError(f"{STDOUT_NAME}: no standard output")
    if _isatty(sys.stdout):
        raise UsageError(f"{STDOUT_NAME}: refusing to write binary data to a terminal (redirect it, or use -o FILE)")


def check_output(src, dst, force: bool):
    """Refuse, before any work, an output that is the input, a directory, a terminal (``-``), or an
    existing file or symlink without ``force``. Returns ``dst`` (a :class:`Path`, or ``"-"``).
    Existing non-regular files (``/dev/null``, FIFOs) are accepted without ``force``: they are
    written into, not replaced."""
    if is_stdio(dst) or _fd_alias(dst) == 1:
        _check_stdout()
        return STDIO
    if _fd_alias(dst) is not None:
        return dst
    dst = Path(dst)
    if not os.path.lexists(dst):
        return dst
    try:
        st = os.stat(dst)
    except OSError:
        st = None  # a dangling symlink: written through, so it needs -f like any existing name
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{dst}: is a directory")
    if st is not None and stat.S_ISREG(st.st_mode) and not is_stdio(src):
        try:
            same = os.path.samestat(os.stat(src), st)
        except OSError:
            same = False
        if same:
            raise UsageError(f"{dst}: output would overwrite the input")
    if st is not None and not stat.S_ISREG(st.st_mode):
        return dst
    if not force:
        raise UsageError(f"{dst}: already exists (use -f to overwrite)")
    return dst


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view[:WRITE_BLOCK])
        view = view[n:]


def _write_stdout(data: bytes) -> None:
    _check_stdout()
    stream = getattr(sys.stdout, "buffer", sys.stdout)
    try:
        sys.stdout.flush()  # text already written goes first
        stream.write(data)
        stream.flush()
    except BrokenPipeError as exc:
        _silence_stdout()
        raise OutputError(f"{STDOUT_NAME}: cannot write (broken pipe)") from exc
    except OSError as exc:
        raise OutputError(f"{STDOUT_NAME}: cannot write ({_reason(exc)})") from exc


def _silence_stdout() -> None:
    """After a broken pipe, point file descriptor 1 at /dev/null, so that the interpreter's final
    flush of what is still buffered does not fail again."""
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (AttributeError, ValueError, OSError):
        pass


def write_output(dst, data: bytes, force: bool = False, mode: int | None = None) -> None:
    """Write ``data`` to ``dst`` (``-``: standard output) as described in the module docstring;
    ``mode``: the new file's permission bits (default ``0o666 & ~umask``). Any failure, and
    Ctrl-C, leave no partial output and no temporary file (a device or FIFO written into aside);
    write failures raise :class:`OutputError` naming the path and the reason."""
    fd = _fd_alias(dst)
    if is_stdio(dst) or fd == 1:
        _write_stdout(data)
        return
    if fd is not None:
        try:
            _write_all(fd, data)
        except OSError as exc:
            raise OutputError(f"{dst}: cannot write ({_reason(exc)})") from exc
        return
    path = Path(dst)
    try:
        st = os.stat(path)  # through any symlinks
    except FileNotFoundError:
        st = None  # no such file, or a dangling symlink
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_into(path, data)  # e.g. /dev/stdout -> /proc/self/fd/1 -> a pipe
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if os.path.lexists(path) and not force:
        raise UsageError(f"{path}: already exists (use -f to overwrite)")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
    try:
        try:
            os.fchmod(fd, default_mode() if mode is None else mode & 0o777)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
        raise


def _write_into(path: Path, data: bytes) -> None:
    """Write into an existing non-regular file (a device, a FIFO), which is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
    try:
        _write_all(fd, data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
    finally:
        os.close(fd)


def atomic_write(path, data: bytes, force: bool, mode: int | None = None) -> None:
    """Compatibility name of :func:`write_output`."""
    write_output(path, data, force, mode)


def read_container(src):
    """The :class:`~bbcodec.container.Container` in ``src`` (``-``: standard input)."""
    from .container import Container

    return Container.from_bytes(read_input(src))


def hint_images(progress, images) -> None:
    """Tell a progress callback that accepts the hint (it has an ``images`` attribute) how many
    images the coding units it will be given belong to, so that it can call them images or tiles."""
    if progress is not None and hasattr(progress, "images") and images is not None:
        try:
            progress.images = int(images)
        except (TypeError, ValueError, AttributeError):
            pass
