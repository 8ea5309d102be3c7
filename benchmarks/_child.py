"""The benchmarks' fresh process per case: a Python snippet run in a child whose last stdout line is
a JSON object, with MALLOC_MMAP_THRESHOLD_=1000000 so that glibc hands freed blocks back at once and
a peak RSS belongs to its own case."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_child(code: str, *args: str) -> dict:
    """The JSON object the child prints last, or {"error": "exit N: <its last stderr line>"}."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1000000")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        return {"error": f"exit {r.returncode}: {tail[:100]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])
