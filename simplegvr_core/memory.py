"""How much memory a run may use, and how an estimate that does not fit is refused (no torch at
import).

`available_memory(device)`: free CUDA memory on a GPU; on the host, the smallest of what the kernel
can still give (`MemAvailable`), what this process's cgroup still allows (v2 `memory.max -
memory.current`, or v1 `limit_in_bytes - usage_in_bytes`) and what its address-space limit still
allows (`RLIMIT_AS` minus the current virtual size). A container or `ulimit -v` therefore plans with
what it really has, not with the host's RAM.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

GiB = 1024**3
UNKNOWN = 1 << 62  # nothing could be read: do not refuse
CGROUP_ROOT = Path("/sys/fs/cgroup")


def format_bytes(n: float) -> str:
    """A byte count a person can read, with enough digits to tell two small numbers apart (0.03 MiB,
    2.51 GiB)."""
    n = max(0.0, float(n))
    for unit, size in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} bytes"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _own_cgroup_dirs(root: Path, membership: Path) -> list[Path]:
    """This process's cgroup folders (v2 unified path and v1 memory controller path) that exist
    under `root`."""
    out = []
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            out.append(root / rel)
        elif "memory" in controllers.split(","):  # v1
            out.append(root / "memory" / rel)
    return [d for d in out if d.is_dir()]


def cgroup_available(
    root: Path = CGROUP_ROOT, membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes this process's cgroup still allows (the tightest of its folder and its parents), None
    if unlimited. `membership` lists the process's cgroups (`/proc/self/cgroup`); both paths are
    arguments for tests."""
    best = None
    for d in _own_cgroup_dirs(Path(root), Path(membership)):
        while True:
            v2_limit, v2_used = _read_int(d / "memory.max"), _read_int(d / "memory.current")
            v1_limit, v1_used = (
                _read_int(d / "memory.limit_in_bytes"),
                _read_int(d / "memory.usage_in_bytes"),
            )
            for limit, used in ((v2_limit, v2_used), (v1_limit, v1_used)):
                if limit is not None and limit < UNKNOWN:  # v1 says 'no limit' with a huge number
                    free = limit - (used or 0)
                    best = free if best is None else min(best, free)
            if d == root or d.parent == d or root not in d.parents:
                break
            d = d.parent
    return best


def _virtual_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def address_space_available() -> int | None:
    """Bytes `RLIMIT_AS` (ulimit -v) still allows this process to map, None if unlimited."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return soft - _virtual_size()


def host_available() -> int:
    """Bytes the host lets this process allocate now: min(MemAvailable, cgroup headroom, RLIMIT_AS
    headroom), >= 0."""
    values = [
        v
        for v in (_meminfo_available(), cgroup_available(), address_space_available())
        if v is not None
    ]
    return max(0, min(values)) if values else UNKNOWN


def available_memory(device) -> int:
    """Bytes that can be allocated on `device` now: free CUDA memory, or `host_available` for the
    CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available()


def check_memory(needed: int, budget, what: str, device="cpu") -> None:
    """Refuse (ValueError, with the estimate) when `needed` bytes exceed the budget: None = no
    check, 'auto' = what `device` has available now, a number = that many bytes."""
    if budget is None:
        return
    limit = available_memory(device) if budget == "auto" else int(budget)
    if needed > limit:
        raise ValueError(
            f"{what} needs about {format_bytes(needed)} but {format_bytes(limit)} "
            f"{'is available' if budget == 'auto' else 'is the memory budget'}: use smaller "
            f"sizes, spatial tiles or temporal chunks, or raise the budget (CLI: --max-memory "
            f"GiB) if you really have the memory"
        )
