"""POST /v1/collections/{c}/files and GET /v1/jobs/{id}, in front of the REAL retrieval service.

Real files of every supported type are built in the test (a hand-written PDF with a text
stream, a .docx written by python-docx), uploaded as multipart, ingested by a background
job of the real retrieval service (Milvus Lite, real embedding) and found by search.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from typing import Any

import docx
import httpx
import pytest

from tests.gateway.api.routes.test_collections import real_client  # noqa: F401 - shared fixture
from tests.gateway.helpers import assert_problem, editor, user

Files = list[tuple[str, tuple[str, bytes, str]]]


def pdf_bytes(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` (offsets computed, so xref is exact)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def docx_bytes(title: str, paragraphs: list[str]) -> bytes:
    document = docx.Document()
    document.core_properties.title = title
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def good_files() -> Files:
    return [
        ("files", ("notes.txt", b"The lighthouse keeper logs the tide every hour.", "text/plain")),
        ("files", ("guide.md", b"# Sourdough\n\nFeed the starter flour and water daily.", "")),
        (
            "files",
            (
                "page.html",
                b"<html><head><title>Volcanoes</title><script>var x=1;</script></head>"
                b"<body><p>Mount Etna erupts lava and ash.</p></body></html>",
                "text/html",
            ),
        ),
        ("files", ("report.pdf", pdf_bytes("Quarterly zeppelin sales rose sharply"), "")),
        (
            "files",
            ("memo.docx", docx_bytes("Memo", ["Penguins huddle together against the cold."]), ""),
        ),
        ("files", ("birds.csv", b"bird,habitat\nheron,wetlands\npuffin,sea cliffs\n", "")),
        (
            "files",
            (
                "docs.json",
                b'[{"id": "j1", "text": "Glaciers carve deep valleys.", "metadata": {"k": 1}}]',
                "",
            ),
        ),
    ]


async def wait_job(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        response = await client.get(url, headers=user())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] in ("succeeded", "failed"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_upload_every_type_then_search(real_client: httpx.AsyncClient) -> None:  # noqa: F811
    collection = f"files-{uuid.uuid4().hex[:8]}"
    response = await real_client.post(
        f"/v1/collections/{collection}/files",
        files=good_files(),
        data={"metadata": '{"team": "ops"}'},
        headers=editor(),
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    ids = [d["id"] for d in accepted["documents"]]
    assert ids == [
        "notes.txt",
        "guide.md",
        "page.html",
        "report.pdf",
        "memo.docx",
        "birds.csv",
        "j1",
    ]
    job = await wait_job(real_client, accepted["status_url"])
    assert job["state"] == "succeeded", job
    progress = job["progress"]
    assert progress["documents_done"] == progress["documents_total"] == 7
    assert progress["chunks_embedded"] == progress["chunks_total"] >= 7

    for query, expected in [
        ("zeppelin sales", "report.pdf"),
        ("penguins in the cold", "memo.docx"),
        ("volcano lava", "page.html"),
        ("puffin habitat", "birds.csv"),
        ("sourdough starter", "guide.md"),
        ("glacier valleys", "j1"),
    ]:
        found = await real_client.post(
            f"/v1/collections/{collection}/search",
            json={"query": query, "top_k": 1},
            headers=user(),
        )
        [hit] = found.json()["results"]
        assert hit["document_id"] == expected, (query, hit)
        assert hit["metadata"]["team"] == "ops"
    html = await real_client.post(
        f"/v1/collections/{collection}/search",
        json={"query": "volcano", "top_k": 1, "filter": {"source": "page.html"}},
        headers=user(),
    )
    [hit] = html.json()["results"]
    assert hit["metadata"]["title"] == "Volcanoes"
    assert "var x" not in hit["text"]

    # Another tenant cannot see the job.
    hidden = await real_client.get(accepted["status_url"], headers=user(tenant="other-tenant"))
    assert_problem(hidden, 404)


@pytest.mark.parametrize(
    ("name", "content", "status", "reason"),
    [
        ("empty.txt", b"", 422, "file 'empty.txt': is empty"),
        ("blank.md", b"  \n\n ", 422, "file 'blank.md': contains no text"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", 422, "file 'broken.pdf': is not a"),
        ("broken.docx", b"PK\x03\x04 not a zip", 422, "file 'broken.docx': is not a readable"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), 422, "file 'latin1.txt': is not valid UTF-8"),
        ("bad.json", b"{nope", 422, "file 'bad.json': is not valid JSON"),
        ("image.png", b"\x89PNG....", 415, "file 'image.png': has the unsupported type '.png'"),
    ],
)
async def test_bad_file_fails_the_whole_upload(
    real_client: httpx.AsyncClient,  # noqa: F811
    name: str,
    content: bytes,
    status: int,
    reason: str,
) -> None:
    collection = f"bad-{uuid.uuid4().hex[:8]}"
    files = [*good_files()[:2], ("files", (name, content, "application/octet-stream"))]
    response = await real_client.post(
        f"/v1/collections/{collection}/files", files=files, headers=editor()
    )
    problem = assert_problem(response, status)
    assert problem["detail"].startswith(reason), problem
    # Nothing half-stored: the good files of the same upload were not ingested either.
    listed = await real_client.get(f"/v1/collections/{collection}/documents", headers=user())
    assert_problem(listed, 404)


async def test_oversized_upload_is_413(real_client: httpx.AsyncClient) -> None:  # noqa: F811
    big = b"x" * (64 * 1024 * 1024 + 1)
    response = await real_client.post(
        "/v1/collections/big/files",
        files=[("files", ("big.txt", big, "text/plain"))],
        headers=editor(),
    )
    assert_problem(response, 413)


async def test_job_ids_are_checked(real_client: httpx.AsyncClient) -> None:  # noqa: F811
    assert_problem(await real_client.get("/v1/jobs/not-a-job", headers=user()), 422)
    assert_problem(await real_client.get(f"/v1/jobs/{uuid.uuid4().hex}", headers=user()), 404)
