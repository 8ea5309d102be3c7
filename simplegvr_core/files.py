"""Writing files without ever losing data: atomic writes, temporaries a later run can clean, disk-full errors
that say so in one line. No torch here (the degradation CLI uses it too).

Temporaries are named `.<name>.<pid>.<token>.tmp` (or `.part.mp4`) beside their target: the pid tells a later
run whether the process that made one is gone (killed with SIGKILL, say), so `clean_stale_temporaries` can
remove it without touching a concurrent run's work.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

_TEMP_RE = re.compile(r"^\.?(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[A-Za-z0-9_]+)\.(tmp|part\.mp4)$")


def temp_path(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh temporary name beside `path` in this module's naming (`kind` 'tmp', or 'part.mp4' for videos)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of our naming in `folder` (files or folders) whose process no longer runs; returns them."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_RE.match(p.name)
        if not m or _pid_alive(int(m.group("pid"))):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_FULL_WORDS = ("no space left", "storagefull", "disk quota", "file too large", "file write failed",
                    "code: 28", "code: 27", "code: 122")


def explain_write_error(e: BaseException, path: str | os.PathLike) -> BaseException:
    """An OSError that says in one line why writing `path` failed when the disk (or a size limit) is full, for
    the exceptions safetensors and torch.save raise there; any other error unchanged."""
    text = str(e).lower()
    if (isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS) or any(w in text for w in _DISK_FULL_WORDS):
        return OSError(errno.ENOSPC, f"no space left on the device (or over a file size limit) writing {str(path)!r}; "
                                     "nothing was overwritten, free some space and run again")
    return e


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path`: an error or an
    interruption leaves `path` as it was (and removes the temporary)."""
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
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        err = explain_write_error(e, path)
        if err is not e:
            raise err from None
        raise
    return path
