"""A process's memory and CPU time as the kernel counts them (``/proc/<pid>/status`` and
``/proc/<pid>/stat``), over its whole tree.

The soak and the memory benchmarks read resident memory this way rather than through a
library: VmRSS is what a Kubernetes memory limit is compared with (the cgroup charges
resident pages), and a service's children (Milvus Lite runs its own server process inside
the retrieval service's pod) count against the same limit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, s; 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: fields count from after its ")".
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used by ``pid``'s process tree, s (children that ended are not counted)."""
    return sum(cpu_seconds(each) for each in tree(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores (/proc/stat)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS
