"""A real standalone Milvus 2.3.5 (``milvus-server`` from PyPI ``milvus==2.3.5``), no Docker.

Shared by the retrieval tests and ``make bench-retrieval``. Every port is chosen free, not
only the proxy's: the defaults would collide with any other Milvus on the machine (another
test session, a developer's server). The whole process group is stopped on exit, because
the launcher exits before the ``milvus`` binary it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pymilvus import MilvusClient

from scripts.devmesh import free_port


class MilvusServerMissing(RuntimeError):
    """``milvus-server`` is not installed."""


class MilvusServerFailed(RuntimeError):
    """``milvus-server`` exited or did not answer in time."""


@dataclass
class MilvusServer:
    """A running ``milvus-server`` process (its own process group) and its URI."""

    uri: str
    process: subprocess.Popen[bytes]
    log: Path


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_milvus_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the whole process group: TERM, then KILL what is left after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + 15
        # Reap the leader as it exits: an unreaped zombie keeps its group "alive" to
        # killpg(0), and the stop then waited out both 15 s timeouts every time.
        while (process.poll() is None or _group_alive(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(process.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def run_milvus_server(
    data: Path, timeout: float = 120, *, time_tick_ms: int | None = None
) -> Iterator[MilvusServer]:
    """Start ``milvus-server`` on free ports, wait until it answers, always stop it.

    ``time_tick_ms`` sets the proxy's time tick (Milvus' default is 200 ms), which bounds
    how long a Strong-consistency read waits for the preceding writes: the tests use a
    shorter one, the benchmarks keep the default.
    """
    # The venv's bin directory is not on PATH when the venv's python is run directly.
    beside = Path(sys.executable).parent / "milvus-server"
    command = str(beside) if beside.exists() else shutil.which("milvus-server")
    if command is None:
        raise MilvusServerMissing("milvus-server is not installed (pip install milvus==2.3.5)")
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    etcd_port = free_port()
    args = [command, "--data", str(data), "--proxy-port", str(port), "--etcd-port", str(etcd_port)]
    if time_tick_ms is not None:
        args += ["--extra-config", f"proxy.timeTickInterval={time_tick_ms}"]
    for option in (
        "proxy-internal",
        "root-coord",
        "query-coord",
        "query-node",
        "index-coord",
        "index-node",
        "data-coord",
        "data-node",
    ):
        args += [f"--{option}-port", str(free_port())]
    # The embedded etcd's peer port (2380) and the REST port are not options; Milvus
    # reads them from its environment. (The management port is picked free by the
    # launcher itself, counting up from 9091.)
    peer = f"http://localhost:{free_port()}"
    etcd_config = data / "embed-etcd.yaml"
    etcd_config.write_text(
        f"listen-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
        f"listen-client-urls: http://localhost:{etcd_port}\n"
        f"advertise-client-urls: http://localhost:{etcd_port}\n"
        f"data-dir: {data / 'etcd.data'}\n"
    )
    env = os.environ | {
        "ETCD_CONFIG_PATH": str(etcd_config),
        "PROXY_HTTP_PORT": str(free_port()),
    }
    log = data / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise MilvusServerFailed(log.read_text(errors="replace")[-2000:])
            try:
                client = MilvusClient(uri=uri, timeout=3)
                client.list_collections()
                client.close()
                break
            except Exception:  # noqa: BLE001 - any failure means "not ready yet"
                if time.monotonic() > deadline:
                    raise MilvusServerFailed(
                        f"milvus-server did not become ready within {timeout:.0f} s"
                    ) from None
                time.sleep(1)
        yield MilvusServer(uri, process, log)
    finally:
        stop_milvus_server(process)
