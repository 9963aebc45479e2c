"""Archive bombs uploaded to a real gateway process (issue 21 item 1): each answered 4xx
problem+json at once, the gateway's memory peak grows less than 100 MB, and /healthz keeps
answering during the upload. Quick: part of the default run (on the session's mesh)."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from scripts.devmesh import Mesh
from tests.conftest import make_jwt
from tests.faults.conftest import say
from tests.gateway.test_archives import bomb_bytes, document_xml, package

pytestmark = pytest.mark.slow  # the session's mesh of real processes

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MB = 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _nested_bomb() -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("bomb.xml", b"0" * 20_000_000)
    return package(document_xml(3), extra={"word/embeddings/nested.zip": inner.getvalue()})


CASES = {
    "bomb": (bomb_bytes, (422,)),
    "many-entries": (lambda: package(document_xml(1), entries=10_001), (413,)),
    # Never inflated: the document itself is read and accepted.
    "nested-zip": (_nested_bomb, (202,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_archive_bomb_against_a_real_gateway(mesh: Mesh, case: str) -> None:
    make, statuses = CASES[case]
    data = make()
    pid = mesh.service("gateway").process.pid  # type: ignore[union-attr]
    headers = {
        "Authorization": "Bearer "
        + make_jwt(mesh.jwt_secret, tenant="faults-bomb", roles=["editor"])
    }
    # Reset the peak (VmHWM) so the growth below is this upload's alone.
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before_kb = _status_kb(pid, "VmRSS")
    health_seconds: list[float] = []
    done = threading.Event()

    def probe_health() -> None:
        with httpx.Client(base_url=mesh.url, timeout=10) as probe:
            while not done.is_set():
                started = time.monotonic()
                assert probe.get("/healthz").status_code == 200
                health_seconds.append(time.monotonic() - started)
                time.sleep(0.02)

    prober = threading.Thread(target=probe_health, daemon=True)
    prober.start()
    try:
        with httpx.Client(base_url=mesh.url, timeout=60) as client:
            started = time.monotonic()
            response = client.post(
                "/v1/collections/bombs/files",
                files=[("files", (f"{case}.docx", data, DOCX))],
                headers=headers,
            )
            seconds = time.monotonic() - started
    finally:
        done.set()
        prober.join(timeout=10)
    growth_mb = (_status_kb(pid, "VmHWM") - before_kb) / 1024
    say(
        f"archive {case}",
        f"{len(data)} bytes uploaded: {response.status_code} in {seconds:.2f} s, gateway peak "
        f"memory +{growth_mb:.1f} MB, slowest /healthz meanwhile "
        f"{max(health_seconds, default=0) * 1000:.0f} ms ({len(health_seconds)} probes); "
        "figures from a shared machine",
    )
    assert response.status_code in statuses, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"].startswith(f"file '{case}.docx'")
    # Hang guards, generous for a shared 2-core machine (the issue saw 61 s and 3.3 s).
    assert seconds < 5
    assert max(health_seconds, default=0) < 1.0
    assert growth_mb < 100
