"""Stopping the Milvus server launcher's process group (scripts/milvus_server.py)."""

from __future__ import annotations

import subprocess
import sys
import time

from scripts.milvus_server import _group_alive, stop_milvus_server

# A group like milvus-server's: a leader and a child of its own, both ending on SIGTERM.
GROUP = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


def test_a_group_that_ends_on_sigterm_is_stopped_at_once() -> None:
    """The stop returns as soon as the group is gone (it used to wait out its two 15 s
    timeouts, because the unreaped leader kept the group alive to killpg)."""
    process = subprocess.Popen([sys.executable, "-c", GROUP], start_new_session=True)
    time.sleep(0.5)  # the child is started
    started = time.monotonic()
    stop_milvus_server(process)
    assert time.monotonic() - started < 5
    assert process.returncode is not None
    assert not _group_alive(process.pid)
