"""Output files and folders: checks before any work, atomic writes, stale temp files.

Standard library only (no torch): every writer uses it, the format core's ``write_network`` and the
Lava runtime's reports included. :mod:`mst_lava.checkpoint` re-exports these names.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import time
from pathlib import Path

from mst_lava.errors import MSTError

# ----------------------------------------------------------------------------------------
# Input files

def check_input_file(path, what: str = "input file") -> Path:
    """Refuse, before it is opened, an input that is not a regular file: a named pipe (FIFO) would
    block the read until a writer comes, a device never ends, a socket cannot be opened. Symlinks to a
    regular file are fine. Returns ``Path(path)``."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MSTError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot inspect it ({_reason(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MSTError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise MSTError(f"{what} {path} is {kind}, not a regular file; it was not opened (a read could block "
                       "forever): give a regular file")
    return path


# ----------------------------------------------------------------------------------------
# Output paths and atomic writes

LEGACY_TEMP_AGE_S = 600     # pid-less temp files (older versions) count as stale after this long


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def file_kind(path, what: str = "file") -> str:
    """What a file is by its first bytes: "empty", "zip", "hdf5", "pickle" (a raw pickle or a pre-1.6 torch file),
    "text" or "unknown" (the one sniffing rule of the checkpoint readers; an unreadable file is an MSTError)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise MSTError(f"cannot read {what} {path}: {_reason(e)}") from None
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if any(head[o:o + 8] == HDF5_MAGIC for o in (0, 512, 1024, 2048)):
        return "hdf5"
    if head[:1] == b"\x80":
        return "pickle"
    if b"\0" not in head:
        try:
            head[:-4].decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    return "unknown"


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device (the disk is full)"
    return e.strerror or str(e) or type(e).__name__


def _check_target(path: Path, what: str) -> None:
    """``path`` is absent or a regular file (not a directory, symlink, FIFO or device)."""
    if not str(path).strip():
        raise MSTError(f"{what} is empty: give a file name")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return          # a file sits in the way: reported by _existing_folder
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot inspect it ({_reason(e)})") from None
    if stat.S_ISLNK(st.st_mode):
        raise MSTError(f"{what} {path} is a symbolic link; give the path of a regular file (it would be "
                       "replaced by a file, not written through)")
    if stat.S_ISDIR(st.st_mode):
        raise MSTError(f"{what} {path} is a directory; give a file name (e.g. inside it)")
    if not stat.S_ISREG(st.st_mode):
        raise MSTError(f"{what} {path} is not a regular file (a device, FIFO or socket); give a regular file name")


def _existing_folder(path: Path, what: str) -> Path:
    """The nearest existing ancestor folder of ``path`` (which mkdir would create the rest in)."""
    a = path.parent if str(path.parent) else Path(".")
    while True:
        try:
            st = os.stat(a)
        except FileNotFoundError:
            if a == a.parent:
                raise MSTError(f"{what} {path}: no existing folder above it") from None
            a = a.parent
            continue
        except NotADirectoryError:
            a = a.parent
            continue
        except OSError as e:
            raise MSTError(f"{what} {path}: cannot inspect {a} ({_reason(e)})") from None
        if not stat.S_ISDIR(st.st_mode):
            raise MSTError(f"{what} {path} lies under {a}, which is a file, not a folder")
        return a


def _probe_writable(folder: Path, path: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the one test that also holds for root and read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".mst_write_probe.", dir=folder)
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot write in the folder {folder} ({_reason(e)})") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError, TypeError):
        return False


def check_output_file(path, what: str = "output file", inputs=()) -> Path:
    """Refuse, before any work, an output file that cannot be written: a directory, a symlink, a
    device/FIFO, a path under a regular file, an unwritable folder, or one of the command's own
    ``inputs``. Removes stale temp files of an earlier killed write to it. Returns ``Path(path)``."""
    path = Path(path)
    _check_target(path, what)
    refuse_inputs(path, inputs, what)
    _probe_writable(_existing_folder(path, what), path, what)
    remove_stale_temps(path)
    return path


def refuse_inputs(path, inputs, what: str = "output file", hint: str = "choose another output name") -> None:
    """Refuse an output ``path`` that is one of ``inputs`` by identity (same device and inode: another
    spelling, a symlink to it or a hard link), so that writing it cannot destroy the input."""
    for inp in inputs:
        if inp is not None and _same_file(path, inp):
            raise MSTError(f"{what} {path} is also this command's input {inp}; writing it would destroy the "
                           f"input: {hint}")


def check_output_dir(path, what: str = "report folder", names=(), inputs=()) -> Path:
    """Refuse, before any work, a folder that cannot be written into: a regular file or device, a
    path under a regular file, or an unwritable folder; and, among the files ``names`` the command
    writes into it, one that is not a regular file (a directory, symlink, FIFO) or that is one of the
    command's ``inputs`` (by identity: ``cp model.pt rep/report.json; ... --report rep``). Returns
    ``Path(path)``."""
    path = Path(path)
    if not str(path).strip():
        raise MSTError(f"{what} is empty: give a folder name")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        _probe_writable(_existing_folder(path, what), path, what)
        return path
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot inspect it ({_reason(e)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MSTError(f"{what} {path} exists and is not a folder; give a folder name")
    for name in names:
        _check_target(path / name, f"{what} file")
        refuse_inputs(path / name, inputs, f"{what} file", "choose another report folder")
    _probe_writable(path, path, what)
    return path


def ensure_dir(path, what: str = "folder") -> Path:
    """``mkdir -p path`` with a one-line MSTError naming the path."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MSTError(f"{what} {path} exists and is not a folder") from None
    except OSError as e:
        if isinstance(e, NotADirectoryError) or e.errno == errno.ENOTDIR:
            raise MSTError(f"{what} {path} lies under a file, not a folder") from None
        raise MSTError(f"cannot create {what} {path}: {_reason(e)}") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    try:     # a zombie (killed, not yet reaped) writes nothing any more
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temps(path) -> list[Path]:
    """Remove temp files of ``path`` (``.NAME.<pid>.<random>.tmp``) whose writer no longer runs, and
    pid-less ones (``.NAME.<random>.tmp``, older versions) not touched for 10 minutes."""
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(".tmp")):
            continue
        middle = e.name[len(prefix):-len(".tmp")]
        m = re.fullmatch(r"(\d+)\.\w+", middle)
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if m:
            pid = int(m.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
        elif not re.fullmatch(r"\w{8}", middle) or now - st.st_mtime < LEGACY_TEMP_AGE_S:
            continue
        try:
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write, what: str = "output") -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a failure leaves nothing half-written.

    The temp file ``.NAME.<pid>.<random>.tmp`` sits next to ``path``; temp files of earlier writers
    that were killed are removed first. ``path`` must be absent or a regular file. An OSError (full
    disk, read-only folder, ...) becomes a one-line MSTError naming ``path``; the temp file is removed
    on any failure, Ctrl-C included."""
    path = Path(path)
    _check_target(path, what)
    ensure_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what}")
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise MSTError(f"cannot write {what} {path}: {_reason(e)}") from None
    os.close(fd)
    from mst_lava.interrupts import check as _interrupt_pending
    try:
        write(tmp)
        _interrupt_pending()        # a Ctrl-C/SIGTERM swallowed inside write() (a callback) commits nothing
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise MSTError(f"cannot write {what} {path}: {_reason(e)}") from None
    except BaseException:
        _unlink(tmp)
        raise


def atomic_write_all(files, what: str = "report file") -> list[Path]:
    """Write several files all or nothing: ``files`` is a sequence of ``(path, write)``; every ``write(tmp)``
    fills a temp file next to its path first, and only when all of them succeeded are they renamed into place.
    A failure (a full disk, Ctrl-C) removes every temp file, and the files of this call already renamed if a
    rename itself fails, so no folder is left with some of the files and not the others; an OSError becomes
    one MSTError naming the file. Returns the paths written."""
    from mst_lava.interrupts import check as _interrupt_pending
    items = [(Path(p), w) for p, w in files]
    for path, _ in items:
        _check_target(path, what)
        ensure_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what}")
        remove_stale_temps(path)
    temps: list[str] = []
    done: list[Path] = []
    current = items[0][0] if items else None
    try:
        for path, write in items:
            current = path
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            temps.append(tmp)
            write(tmp)
            _interrupt_pending()
            os.chmod(tmp, 0o644)
        for (path, _), tmp in zip(items, temps):
            current = path
            os.replace(tmp, path)
            done.append(path)
    except BaseException as e:
        for tmp in temps:
            _unlink(tmp)
        for p in done:          # a rename failed after others: take those back too (all or nothing)
            _unlink(p)
        if isinstance(e, OSError):
            raise MSTError(f"cannot write {what} {current}: {_reason(e)}; nothing of "
                           f"{', '.join(p.name for p, _ in items)} was written") from None
        raise
    return [p for p, _ in items]


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    except OSError:
        pass
