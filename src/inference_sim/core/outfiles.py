"""Output files: check every path before a run, write what was asked, replace nothing else.

Every file ``blis`` writes (``--results-path``, ``--trace-output``, ``--export-trace``,
``blis report -o``, ``blis plot -o``, the sweep tables) goes through this module, so the
rules are the same everywhere (docs/troubleshooting.md, "Output files"):

* a new path or an existing **regular file** is written to a temporary file in the same
  folder and renamed over the target: a reader sees the old file or the new one, never
  half of one, and an interrupted write leaves the old file and no temporary file;
* a **symbolic link** is followed: the rules apply to its target and the link stays;
* a **device, FIFO or pipe** (``/dev/null``, ``mkfifo``, bash's ``>(jq .)``) is written
  through, as a shell redirection would; it is never replaced by a regular file;
* a folder, a socket, a name longer than the file system allows, a missing or read-only
  folder: an error before the run (:func:`check_output_file`), never after it.

Why not always rename: ``os.replace`` swaps the directory entry, so renaming over
``/dev/null`` (as root) turns the device into a regular file, renaming over a symlink
drops the link, and a FIFO's reader never sees the data.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

_TMP_PREFIX = ".blis-"
_TMP_SUFFIX = ".tmp"
_NEW_FILE_MODE = 0o644  # mkstemp makes 0600; results are ordinary shared files


class OutputPathError(ValueError):
    """An output path that cannot be written (bad input: found before the run)."""


# --- what a path is -------------------------------------------------------------------------


def _name_max(folder: str) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return 255  # Linux, macOS and Windows file systems alike


def _check_name_lengths(path: str) -> None:
    """Each new path component must fit the file system (ENAMETOOLONG otherwise)."""
    folder = os.path.dirname(os.path.abspath(path))
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder) if os.path.dirname(folder) != folder else ""
    limit = _name_max(folder or "/")
    for part in os.path.normpath(path).split(os.sep):
        size = len(os.fsencode(part))
        if size > limit:
            shown = part if len(part) <= 40 else part[:37] + "..."
            raise OutputPathError(
                f"file name {shown!r} is {size} bytes; the file system allows at most {limit}"
            )


def is_special(path: str | os.PathLike[str]) -> bool:
    """True for an existing device, FIFO or pipe (symlinks followed): written through."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _stat(path: str) -> os.stat_result | None:
    """``os.stat`` (symlinks followed); None for a new path; OutputPathError otherwise."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise OutputPathError(f"a part of {path} is a file, not a folder") from None
    except OSError as exc:
        raise OutputPathError(exc.strerror or str(exc)) from None


def _probe_folder(folder: str) -> None:
    """Create and remove a temporary file in ``folder``: the one sure test of writing."""
    if not os.path.exists(folder):
        raise OutputPathError(f"folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise OutputPathError(f"{folder} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=folder)
    except OSError as exc:
        # "not writable" for a permission problem; else the system's reason alone, as
        # an existing folder that refuses new files (/proc: ENOENT) is not "missing"
        what = (
            "is not writable"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            else ("cannot hold a new file")
        )
        raise OutputPathError(f"folder {folder} {what} ({exc.strerror or exc})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputPathError` now if ``path`` cannot be written as a file later."""
    p = os.fspath(path)
    if not p:
        raise OutputPathError("empty path")
    if "\x00" in p:
        raise OutputPathError("the path contains a NUL character")
    if p.endswith(("/", os.sep)):
        raise OutputPathError("ends with a slash, so names a folder; give a file name")
    _check_name_lengths(p)
    st = _stat(p)
    if st is None:  # a new file (or a dangling symlink: its target is created)
        _probe_folder(os.path.dirname(os.path.realpath(p)) or ".")
        return
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise OutputPathError("is a folder; give a file name")
    if stat.S_ISSOCK(mode):
        raise OutputPathError("is a socket; give a file, a device or a FIFO")
    if not os.access(p, os.W_OK):
        raise OutputPathError("is not writable")
    if stat.S_ISREG(mode):
        _probe_folder(os.path.dirname(os.path.realpath(p)) or ".")


def check_output_folder(path: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputPathError` now if ``path`` cannot be (made and) written as a folder."""
    p = os.fspath(path)
    if not p:
        raise OutputPathError("empty path")
    if "\x00" in p:
        raise OutputPathError("the path contains a NUL character")
    _check_name_lengths(p)
    st = _stat(p)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise OutputPathError("exists and is not a folder; give a folder name")
        _probe_folder(os.path.realpath(p))
        return
    if os.path.islink(p):
        raise OutputPathError(f"is a symbolic link to {os.readlink(p)}, which does not exist")
    # A new folder: its nearest existing ancestor must be a writable folder.
    ancestor = os.path.dirname(os.path.abspath(p))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    _probe_folder(ancestor)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when writing ``a`` would replace the regular file ``b`` (links followed).

    Devices and FIFOs never count: two outputs sent to ``/dev/null`` are fine."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)
    if not stat.S_ISREG(sa.st_mode):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_overlaps(
    outputs: Iterable[tuple[str, str]], inputs: Iterable[tuple[str, str]] = ()
) -> None:
    """OutputPathError when an output would replace an input or another output.

    ``outputs`` and ``inputs`` are ``(flag, path)`` pairs; empty paths are skipped."""
    outs = [(f, p) for f, p in outputs if p]
    ins = [(f, p) for f, p in inputs if p]
    for i, (flag, path) in enumerate(outs):
        for other_flag, other in ins:
            if same_file(path, other):
                raise OutputPathError(
                    f"{flag} {path} is also the input {other_flag}: writing it would "
                    "replace the input; give another output path"
                )
        for other_flag, other in outs[:i]:
            if same_file(path, other):
                raise OutputPathError(
                    f"{flag} {path} is also {other_flag}: two outputs cannot share a file"
                )


# --- writing --------------------------------------------------------------------------------


def _target(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """(the path to write, written through?) for ``path``, symlinks followed."""
    p = os.fspath(path)
    if is_special(p):
        return p, True  # open() follows the link; /dev/fd/N has no useful realpath
    return os.path.realpath(p), False


class OutputFile:
    """One output file being written: ``fh`` to write to, then :meth:`commit` or :meth:`abort`.

    As a context manager: committed when the block ends normally, aborted (nothing left
    behind, the old file untouched) when it raises — KeyboardInterrupt included."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "w",
        *,
        encoding: str | None = "utf-8",
        newline: str | None = None,
    ) -> None:
        if "b" in mode:
            encoding = None
        self.path, self.through = _target(path)
        self._tmp: str | None = None
        if self.through:
            self.fh: IO[Any] = open(self.path, mode, encoding=encoding, newline=newline)  # noqa: SIM115
            return
        fd, self._tmp = tempfile.mkstemp(
            prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=os.path.dirname(self.path) or "."
        )
        try:
            self.fh = os.fdopen(fd, mode, encoding=encoding, newline=newline)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            self.abort()
            raise

    def commit(self) -> None:
        """Put the file in place (rename over the target, or finish the write-through)."""
        try:
            self.fh.flush()
            if self.through:
                self.fh.close()
                return
            os.fsync(self.fh.fileno())
            self.fh.close()
            assert self._tmp is not None
            os.chmod(self._tmp, _mode_for(self.path))
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what was written: the temporary file goes, the old file stays."""
        fh = getattr(self, "fh", None)
        with contextlib.suppress(OSError, ValueError):
            if fh is not None and not fh.closed:
                fh.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None

    def __enter__(self) -> IO[Any]:
        return self.fh

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _mode_for(path: str) -> int:
    """An existing file keeps its permission bits; a new one is 0644."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return _NEW_FILE_MODE


@contextlib.contextmanager
def output_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A file name to give a writer that needs one (Parquet, PNG); put in place on success.

    Regular or new target: a temporary name in the same folder, renamed over it. Device
    or FIFO: a temporary file in the system temporary folder, copied through, removed."""
    target, through = _target(path)
    folder = tempfile.gettempdir() if through else (os.path.dirname(target) or ".")
    suffix = os.path.splitext(target)[1] if not through else ""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX + suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        if through:
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            os.chmod(tmp, _mode_for(target))
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with OutputFile(path) as fh:
        fh.write(text)


_SCALARS = frozenset((str, int, float, bool, type(None)))
_STR = frozenset((str,))
_FLAT_ENCODERS: dict[int, json.JSONEncoder] = {}


def _flat_json(obj: Any, level: int) -> str | None:
    """``obj`` as :func:`indented_json` writes it, if it is a plain non-empty list or dict
    of plain scalars (string keys); else None.

    The C encoder with ``",\n" + indent`` as item separator writes such a container with
    the bytes of the (pure-Python) indented encoder, once the brackets are moved to
    their own lines."""
    kind = type(obj)
    if kind is dict:
        if not (
            obj and _SCALARS.issuperset(map(type, obj.values())) and _STR.issuperset(map(type, obj))
        ):
            return None
    elif kind is list or kind is tuple:
        if not (obj and _SCALARS.issuperset(map(type, obj))):
            return None
    else:
        return None
    enc = _FLAT_ENCODERS.get(level)
    if enc is None:
        enc = _FLAT_ENCODERS[level] = json.JSONEncoder(
            separators=(",\n" + "  " * (level + 1), ": ")
        )
    text = enc.encode(obj)
    inner = "\n" + "  " * (level + 1)
    return text[0] + inner + text[1:-1] + inner[:-2] + text[-1]


def indented_json(obj: Any, level: int = 0) -> Iterator[str]:
    """The text of ``json.dump(obj, fh, indent=2)`` at nesting ``level``, in chunks.

    ``json`` writes indented output with its pure-Python encoder, about 3x slower than
    its C encoder. Plain containers of plain scalars (a per-request record, a time-series
    column) go through :func:`_flat_json`; other lists and dicts are walked here, so a
    list subclass that streams its items (the results' ``requests``) is iterated once;
    anything else (scalar subclasses, non-string keys) is left to ``json.dumps``.
    """
    flat = _flat_json(obj, level)
    if flat is not None:
        yield flat
        return
    inner = "\n" + "  " * (level + 1)
    if isinstance(obj, dict) and obj and _STR.issuperset(map(type, obj)):
        sep = "{" + inner
        for key, value in obj.items():
            text = _flat_json(value, level + 1)
            if text is None:
                yield sep + json.dumps(key) + ": "
                yield from indented_json(value, level + 1)
            else:
                yield sep + json.dumps(key) + ": " + text
            sep = "," + inner
        yield inner[:-2] + "}"
    elif isinstance(obj, list | tuple) and obj:
        sep = "[" + inner
        for item in obj:
            text = _flat_json(item, level + 1)
            if text is None:
                yield sep
                yield from indented_json(item, level + 1)
            else:
                yield sep + text
            sep = "," + inner
        yield inner[:-2] + "]"
    else:
        yield json.dumps(obj, indent=2).replace("\n", "\n" + "  " * level)


def write_json(path: str | os.PathLike[str], doc: Any) -> None:
    """``doc`` as indented JSON (no trailing newline), the bytes of ``json.dump(doc, fh,
    indent=2)`` (:func:`indented_json`)."""
    with OutputFile(path) as fh:
        fh.writelines(indented_json(doc))
