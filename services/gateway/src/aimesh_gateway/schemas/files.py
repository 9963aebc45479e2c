"""OpenAI's files API shape (the part the ``file_search`` flow uses)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FILE_ID_PATTERN = r"^file-[A-Za-z0-9_-]{1,59}$"
# Purposes of files aimesh stores: they are uploaded to be added to vector stores.
FILE_PURPOSES = ("assistants", "user_data")
MAX_FILENAME_CHARS = 255


class FileObject(BaseModel):
    """An uploaded file (OpenAI's ``File`` object)."""

    id: str = Field(examples=["file-3f2a9c0d6b1e4f5a8c7d9e0f1a2b3c4d"])
    object: Literal["file"] = "file"
    bytes: int = Field(ge=0, description="Size in bytes.", examples=[1834])
    created_at: int = Field(description="Unix time (seconds).", examples=[1767225600])
    filename: str = Field(examples=["handbook.md"])
    purpose: str = Field(examples=["assistants"])
    status: Literal["uploaded", "processed", "error"] = Field(
        "processed", description="Deprecated by OpenAI; always processed (stored)."
    )
    expires_at: int | None = Field(None, description="Files do not expire here: null.")
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
