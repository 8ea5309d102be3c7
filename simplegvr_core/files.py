"""Reading and writing files without ever losing data. No torch here (the degradation CLI uses it
too).

The one home of every deletion the project makes, and of the policy every writer follows:

- **Temporaries** are named `.<name>.simplegvr-<pid>-<8 hex>.tmp` (or `.part.mp4`) beside their
  target (`temp_path`). Only names of exactly that form are ever removed by
  `clean_stale_temporaries`, and only when the process that made them is gone (killed with SIGKILL,
  say): a user's `notes.40000.v2.tmp` or `holiday.2019.day1.part.mp4` is never touched. What is
  removed is returned so the caller can say so.
- **Outputs** (`check_output`, then `atomic_write(..., replace=...)`): an existing path is refused
  unless the user asked to overwrite it, an output that is one of the inputs is refused, and the
  check is made again at the moment of the rename (a hard link, which fails if the name appeared
  meanwhile): of two runs racing to the same path exactly one wins and the other says so; nothing is
  replaced that was not meant to be.
- **Our own folders** are removed only when they prove they are ours: a training checkpoint folder
  (`step-NNNNNNN` holding only the trainer's files) or a folder carrying a marker file we wrote.
- **Inputs** (`check_input_file`, `parse_json`): a missing file, a folder, a FIFO or device, JSON
  nested too deeply are ValueErrors naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

TEMP_TAG = "simplegvr"
_TEMP_RE = re.compile(
    rf"^\.(?P<name>.+)\.{TEMP_TAG}-(?P<pid>[1-9][0-9]{{0,9}})-(?P<token>[0-9a-f]{{8}})"
    r"\.(?:tmp|part\.mp4)$"
)
# characters of a name, path or caption-like setting; more is a mistake, not a setting
MAX_TEXT_VALUE = 4096


def temp_path(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh temporary name beside `path` in this module's naming (`kind` 'tmp', or 'part.mp4' for
    videos)."""
    if kind not in ("tmp", "part.mp4"):
        raise ValueError(f"temporary kind {kind!r}: expected 'tmp' or 'part.mp4'")
    path = Path(path)
    return path.with_name(f".{path.name}.{TEMP_TAG}-{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path`'s name is one of ours (`temp_path`): the only names `clean_stale_temporaries`
    removes."""
    return _TEMP_RE.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, OSError):  # no process can have this number
        return False
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def remove_temporary(path: str | os.PathLike) -> None:
    """Remove one of our own temporaries (a file or a folder); anything else is refused
    (ValueError): the one way code outside this module deletes a temporary it made."""
    p = Path(path)
    if not is_temporary(p):
        raise ValueError(f"refusing to remove {str(p)!r}: not a temporary of this project")
    _remove(p)


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of our exact naming in `folder` (files or folders) whose process no
    longer runs; returns what was removed (say so to the user). Nothing else is ever touched."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if not m or _pid_alive(int(m.group("pid"))):
            continue
        _remove(p)
        removed.append(p)
    return removed


# --- our own folders ------------------------------------------------------------------------------
CHECKPOINT_RE = re.compile(r"^step-[0-9]{7,}$")
CHECKPOINT_FILES = frozenset({"model.safetensors", "ema.safetensors", "state.pt"})


def remove_checkpoint_folder(path: str | os.PathLike) -> None:
    """Remove a training checkpoint folder the trainer wrote (`step-NNNNNNN` holding only its files,
    and our temporaries); a folder holding anything else is refused (ValueError) and left as it
    is."""
    p = Path(path)
    if not CHECKPOINT_RE.match(p.name) or not p.is_dir() or p.is_symlink():
        raise ValueError(
            f"refusing to remove {str(p)!r}: not a training checkpoint folder (step-NNNNNNN)"
        )
    other = [f.name for f in p.iterdir() if f.name not in CHECKPOINT_FILES and not is_temporary(f)]
    if other:
        raise ValueError(
            f"refusing to remove {str(p)!r}: it holds files the trainer did not write ({other[0]})"
        )
    shutil.rmtree(p)


def write_marker(folder: str | os.PathLike, marker: str, text: str) -> Path:
    """Mark `folder` (created if needed) as a private folder of this project, so
    `empty_private_folder` may empty it later."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / marker).write_text(text)
    return folder


def empty_private_folder(
    folder: str | os.PathLike, marker: str, what: str, kind: str = "a folder this project made"
) -> Path:
    """Remove everything inside `folder` but its marker, when the marker says the project made it; a
    folder without the marker that holds anything is refused (ValueError), and a new or empty one is
    simply used."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {str(folder)!r} is a file: expected a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / marker).is_file():
            raise ValueError(
                f"{what} {str(folder)!r} exists and is not {kind} (no {marker}): "
                "give a new or empty folder"
            )
        for p in folder.iterdir():
            if p.name != marker:
                _remove(p)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- inputs ---------------------------------------------------------------------------------------
def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` as a Path when it is a regular file (or a link to one); ValueError saying what it is
    otherwise."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ValueError(f"{what} {str(p)!r} does not exist") from None
    except OSError as e:
        raise ValueError(f"{what} {str(p)!r} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {str(p)!r} is a folder: expected a file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise ValueError(f"{what} {str(p)!r} is {kind}, not a regular file")
    return p


def parse_json(text: str | bytes, what: str):
    """json.loads that names `what` on malformed or absurdly nested input (ValueError, never
    RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is JSON nested too deeply to be read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None


def short(value, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters, for error messages about values a user may have made
    huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- outputs --------------------------------------------------------------------------------------
class OutputExistsError(FileExistsError):
    """An output path exists (or appeared while we wrote it) and replacing it was not asked for."""

    def __str__(self) -> str:  # one plain line, no "[Errno 17]"
        return str(self.args[0]) if self.args else "output exists"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(
    path: str | os.PathLike, *, overwrite: bool = False, inputs=(), what: str = "output"
) -> Path:
    """Refuse an output path before any work is done: an existing path without `overwrite`, a folder
    or special file in its place, a parent that is a file, and a path that is one of `inputs`
    (files, or folders whose files are read). Returns it as a Path. The rename re-checks
    (`atomic_write(..., replace=overwrite)`)."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise ValueError(f"{what} {str(path)!r}: expected a file name")
    for src in inputs:
        src = Path(src)
        targets = [src]
        if src.is_dir():
            try:
                targets += [f for f in src.iterdir() if f.is_file()]
            except OSError:
                pass
        if any(
            t.exists() and p.exists() and _same_file(p, t) or p.resolve() == t.resolve()
            for t in targets
        ):
            raise ValueError(
                f"{what} {str(p)!r} is also an input ({str(src)!r}): choose another output path"
            )
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ValueError(f"{what} {str(p)!r}: {str(anc)!r} is a file, not a folder")
    if p.is_symlink() or p.exists():
        if p.is_dir():
            raise ValueError(f"{what} {str(p)!r} is a folder: expected a file name")
        if p.exists() and not p.is_file():
            raise ValueError(f"{what} {str(p)!r} exists and is not a regular file")
        if not overwrite:
            raise OutputExistsError(f"{what} {str(p)!r} exists: pass --overwrite to replace it")
    return p


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """An output folder, created if needed; ValueError (before any work) when it, or a folder above
    it, is a file."""
    p = Path(path)
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ValueError(f"{what} {str(p)!r}: {str(anc)!r} is a file, not a folder")
    p.mkdir(parents=True, exist_ok=True)
    return p


def commit(tmp: str | os.PathLike, path: str | os.PathLike, replace: bool) -> None:
    """Move a finished temporary onto `path`. replace=False re-checks at this moment: a hard link
    fails if `path` exists, so of two runs racing to one path exactly one wins; the other gets
    OutputExistsError and `path` keeps the winner's file."""
    tmp, path = Path(tmp), Path(path)
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(
            f"{str(path)!r} appeared while this run was writing it (another run?); it was left "
            "as it is and this result was not written: choose another path or pass --overwrite"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        # a file system without hard links: claim the name exclusively, then move onto our own claim
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise OutputExistsError(
                f"{str(path)!r} appeared while this run was writing it (another run?); it was "
                "left as it is: choose another path or pass --overwrite"
            ) from None
        os.close(fd)
        os.replace(tmp, path)
        return
    tmp.unlink()


def commit_folder(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished temporary folder (our naming) onto `path`, which must not exist (a folder is
    not replaced: remove an own one first, e.g. `remove_checkpoint_folder`); OutputExistsError if it
    appeared meanwhile."""
    tmp, path = Path(tmp), Path(path)
    if not is_temporary(tmp) or not tmp.is_dir():
        raise ValueError(f"refusing to move {str(tmp)!r}: not a temporary folder of this project")
    if path.exists() or path.is_symlink():
        raise OutputExistsError(f"{str(path)!r} exists: it was left as it is")
    os.rename(tmp, path)  # a folder onto a name that does not exist: atomic, and never over a file


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_FULL_WORDS = (
    "no space left",
    "storagefull",
    "disk quota",
    "file too large",
    "file write failed",
    "code: 28",
    "code: 27",
    "code: 122",
    "unexpected pos",
)


def explain_write_error(e: BaseException, path: str | os.PathLike) -> BaseException:
    """An OSError that says in one line why writing `path` failed when the disk (or a size limit) is
    full, for the exceptions safetensors and torch.save raise there (torch's zip writer says
    'unexpected pos'); any other error unchanged."""
    text = str(e).lower()
    if (isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS) or any(
        w in text for w in _DISK_FULL_WORDS
    ):
        return OSError(
            errno.ENOSPC,
            f"no space left on the device (or over a file size limit) writing {str(path)!r}; "
            "nothing was overwritten, free some space and run again",
        )
    return e


def atomic_write(path: str | os.PathLike, write, *, replace: bool = True) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then move it onto `path` (`commit`):
    an error or an interruption leaves `path` as it was and removes the temporary. replace=False:
    never replace an existing `path`, even one that appears while writing (OutputExistsError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb"):
            pass
        write(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # give the file the permissions a plain open() would
        commit(tmp, path, replace)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        err = explain_write_error(e, path)
        if err is not e:
            raise err from None
        raise
    return path
