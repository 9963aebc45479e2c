"""File uploads and the background ingestion jobs they start."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class UploadedDocument(BaseModel):
    id: str = Field(description="Document id (the file name; long files get #partN).")
    source: str = Field(description="File name as uploaded.")


class UploadAccepted(BaseModel):
    job_id: str = Field(examples=["3f2a9c0d6b1e4f5a8c7d9e0f1a2b3c4d"])
    status_url: str = Field(description="Where to follow the job: GET it.")
    documents: list[UploadedDocument]


class JobProgress(BaseModel):
    documents_done: int
    documents_total: int
    chunks_embedded: int = Field(description="Chunks embedded and stored so far.")
    chunks_total: int


class JobStatus(BaseModel):
    id: str
    collection: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: JobProgress
    errors: list[str] = Field(description="Readable errors (failed jobs, retried attempts).")
    created_at: str = Field(description="RFC 3339, UTC.")
    updated_at: str = Field(description="RFC 3339, UTC.")
