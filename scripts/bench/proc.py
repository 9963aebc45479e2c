"""A process's memory as the kernel counts it (``/proc/<pid>/status``), over its whole tree.

The soak and the memory benchmarks read resident memory this way rather than through a
library: VmRSS is what a Kubernetes memory limit is compared with (the cgroup charges
resident pages), and a service's children (Milvus Lite runs its own server process inside
the retrieval service's pod) count against the same limit.
"""

from __future__ import annotations

import re
from pathlib import Path


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Milvus Lite's server under retrieval, for one)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the task ended while we looked
            continue
        for child in children:
            found.extend(tree(int(child)))
    return found


def status_kib(pid: int, field: str) -> int:
    """``field`` of /proc/<pid>/status in KiB (VmRSS, VmHWM, ...); 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def tree_mib(pid: int, field: str = "VmRSS") -> float:
    """MiB of ``field`` summed over ``pid``'s process tree."""
    return sum(status_kib(each, field) for each in tree(pid)) / 1024


def command_name(pid: int) -> str:
    """The process's short name (``/proc/<pid>/comm``), or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
