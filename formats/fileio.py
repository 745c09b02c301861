"""Files in and out, the one way every chipq reader and writer does it (standard library only).

Inputs: `open_regular` opens a path without blocking and refuses anything but a regular file
(a FIFO would block a reader forever, a device such as /dev/zero never ends, a folder is not a
file). `read_regular` reads one, refusing it before reading when it is larger than a cap.

Outputs: `check_output` is called before any work, so a run that cannot write its result fails
at once, not after an hour: the parent folder must exist and be writable, and the path must not
exist or be a regular file (a FIFO, a device node or a folder is never replaced).
`atomic_write` writes a temp file ``.NAME.<random>.tmp`` in the same folder, fsyncs it, gives it
the mode a plain ``open`` would (0666 less the umask, not mkstemp's 0600) and renames it over the
path; on any failure the temp file is removed and the path is left as it was. A temp file left by
a killed run (``kill -9`` runs no cleanup) is removed by the next successful write of the same
path (`remove_stale_temps`). It takes the bytes, or a function that writes into the open temp
file (``lambda f: np.savez(f, **arrays)``, ``lambda f: fig.savefig(f, format="png")``);
`atomic_write_text` takes a string.

Moves: `replace_file` puts a finished file (made elsewhere in the same file system, e.g. by pip
or in a staging folder) at its path in one rename; `replace_dir` does the same for a staging
folder, keeping the old folder until the new one is in place. These and `atomic_write` are the
only renames in chipq: no other module calls ``os.replace`` or ``os.rename``.

This module lives in `chipq.formats` because the blob writer needs it and the chip format depends
on nothing above it; every other writer (descriptor files, retraining checkpoints, test vectors,
fetched weights) imports it from here.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from chipq.formats.errors import ChipqError

TEMP_SUFFIX = ".tmp"


class FileRefused(ChipqError):
    """A path that cannot be read or written as asked: missing, not a regular file, no permission."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file"
    return exc.strerror or str(exc)


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """Open `path` for reading if it is a regular file, without ever blocking on it.

    Raises:
        FileRefused: missing, unreadable, or a folder, FIFO, device or socket.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise FileRefused(f"{path}: the {what} is not a regular file (it is a folder)") from None
    except OSError as exc:
        raise FileRefused(f"{path}: cannot read the {what} ({_reason(exc)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(f"{path}: the {what} is not a regular file (it is {_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, refused before reading when larger than `limit`.

    Raises:
        FileRefused: not a readable regular file, or larger than `limit` bytes.
    """
    path = Path(path)
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise FileRefused(f"{path}: {size} bytes, more than the {limit} a {what} may have")
        try:
            data = handle.read(limit + 1)  # bounded even if the file grows meanwhile
        except OSError as exc:
            raise FileRefused(f"{path}: cannot read the {what} ({_reason(exc)})") from None
    if len(data) > limit:
        raise FileRefused(f"{path}: grew past the {limit} bytes a {what} may have while being read")
    return data


Inputs = Sequence[tuple[str, "str | os.PathLike | None"]]  # (what it is, path) of a command's inputs


def check_not_input(path: str | os.PathLike, inputs: Inputs, what: str = "output", option: str = "") -> None:
    """Refuse an output that is one of the command's inputs, or lies inside an input folder.

    Writing it would replace (or add files among) what the command reads: the user's model, photo
    or descriptor file would be lost. Links are followed and hard links compared by identity, so
    another name for the same file is refused too. None entries in `inputs` are skipped.

    Raises:
        FileRefused: naming both paths.
    """
    where = f"{option} {path}" if option else str(path)
    target = Path(os.path.realpath(path))
    for label, given in inputs:
        if given is None:
            continue
        source = Path(os.path.realpath(given))
        same = target == source
        if not same:
            try:
                same = os.path.samefile(target, source)
            except OSError:
                same = False
        if same:
            raise FileRefused(f"{where}: is the {label} {given}; writing the {what} there would destroy it: choose another name")
        if os.path.isdir(source) and target.is_relative_to(source):
            raise FileRefused(f"{where}: lies inside the {label} {given}; write the {what} outside the folder chipq reads")


def check_output(path: str | os.PathLike, what: str = "output", option: str = "", inputs: Inputs = ()) -> Path:
    """Refuse, before any work, an output path that `atomic_write` could not write or must not replace.

    Args:
        path: the file to be written.
        what: the kind of file, for messages.
        option: the command-line option that named it (``--output``), for messages.
        inputs: the command's inputs, ``(what, path)``: the output may be none of them, nor lie
            inside an input folder (`check_not_input`).

    Raises:
        FileRefused: the folder is missing or not writable, or the path exists and is not a
            regular file (a folder, FIFO, device node or socket is never replaced), or it is an input.
    """
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    check_not_input(path, inputs, what, option)
    parent = path.parent
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise FileRefused(f"{where}: cannot use as the {what} ({_reason(exc)})") from None
    if mode is not None and stat.S_ISLNK(mode):
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = None  # a dangling link: the rename replaces the link itself
    if mode is not None and not stat.S_ISREG(mode):
        raise FileRefused(f"{where}: cannot write the {what}: the path is {_kind(mode)}; only a regular file is replaced")
    if not parent.is_dir():
        raise FileRefused(f"{where}: cannot write the {what}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileRefused(f"{where}: cannot write the {what}: folder {parent} is not writable")
    return path


def check_output_dir(
    path: str | os.PathLike, what: str = "output folder", option: str = "", parents: bool = False, inputs: Inputs = ()
) -> Path:
    """Refuse a folder to be created or filled: it must be a writable folder, or not exist under a
    writable parent (with `parents`, under a writable existing ancestor: the caller makes the rest),
    and be none of `inputs` nor lie inside an input folder (`check_not_input`)."""
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    check_not_input(path, inputs, what, option)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise FileRefused(f"{where}: cannot use as the {what} ({_reason(exc)})") from None
    if mode is not None:
        if not stat.S_ISDIR(mode):
            raise FileRefused(f"{where}: exists and is {_kind(mode) if not stat.S_ISREG(mode) else 'a file'}, expected a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise FileRefused(f"{where}: folder is not writable")
        return path
    parent = path.parent
    if not parent.is_dir():
        if not parents:
            raise FileRefused(f"{where}: folder {parent} does not exist")
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise FileRefused(f"{where}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileRefused(f"{where}: folder {parent} is not writable")
    return path


@contextmanager
def exclusive_output(path: str | os.PathLike, what: str = "output", option: str = "") -> Iterator[None]:
    """Hold `path` for one writer: a second run writing the same output is refused at once.

    The lock is an advisory ``flock`` on ``.NAME.lock`` beside the output, removed when the run
    ends; a killed run's lock file is released by the kernel and removed by the next run. Without
    it, two runs with other settings would both finish and one user would get the other's file.

    Raises:
        FileRefused: another process holds the lock.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    where = f"{option} {path}" if option else str(path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise FileRefused(f"{where}: cannot lock the {what} ({_reason(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileRefused(f"{where}: another chipq run is writing this {what}; wait for it or choose another name") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a file the previous holder just removed
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed writer of `path` left (``.NAME.*.tmp``, regular files only)."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    prefix = temp_prefix(path)
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX):
            try:
                if stat.S_ISREG(entry.lstat().st_mode):
                    entry.unlink()
                    removed.append(entry)
            except OSError:
                pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None] | bytes, what: str = "file") -> None:
    """Write `path` atomically (module docstring); `write` is bytes or a function given the open file.

    Args:
        path: the file to write; its folder must exist.
        write: the bytes, or a function that writes them into the open binary temp file
            (``lambda f: np.savez(f, **arrays)``); it must not close the file. A writer that
            hides an OSError in another exception (torch.save wraps a full disk in a RuntimeError)
            should make its bytes in memory and pass them instead.
        what: the kind of file, for messages.

    Raises:
        FileRefused: the path cannot be written (see `check_output`), or the file system refused
            the write (disk full, no permission); `path` is left as it was and no temp file stays.
    """
    import tempfile

    path = Path(path)
    check_output(path, what)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, (bytes, bytearray, memoryview)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise FileRefused(f"{path}: cannot write the {what} ({_reason(exc)})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    remove_stale_temps(path)


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "file", encoding: str = "utf-8") -> None:
    """Write the string `text` to `path` atomically, encoded with `encoding` (see `atomic_write`).

    The text is written as given: no newline is added or translated.

    Raises:
        FileRefused: as `atomic_write`.
    """
    atomic_write(path, text.encode(encoding), what)


def replace_file(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the finished regular file `source` to `path` in one rename, replacing a file there.

    `source` must be on the same file system (e.g. in `path`'s folder or a staging folder beside
    it), so a reader of `path` sees the old file or the new one, never a part.

    Raises:
        OSError: the rename failed; `path` is left as it was.
    """
    os.replace(source, path)


def replace_dir(staging: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the finished folder `staging` at `path`: one rename, or two around an existing folder.

    An existing `path` is first renamed to a free name beside it, then `staging` takes its place
    and the old folder is deleted; if that second rename fails the old folder is put back. `staging`
    must be beside `path` (same file system).

    Raises:
        OSError: a rename failed; `path` holds the old folder (or nothing, if it had none).
    """
    import shutil
    import tempfile

    staging, path = Path(staging), Path(path)
    if not os.path.lexists(path):
        os.rename(staging, path)
        return
    old = Path(tempfile.mkdtemp(dir=staging.parent, prefix=f".{path.name}.old-"))
    os.rmdir(old)  # a free name next to path
    os.rename(path, old)
    try:
        os.rename(staging, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
