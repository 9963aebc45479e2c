"""Documents of a collection."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aimesh_common.limits import MAX_DOCUMENT_ID_CHARS
from aimesh_gateway.schemas.common import FreeFormObject, StrictModel

MAX_DOCUMENTS_PER_REQUEST = 1000


class DocumentIn(StrictModel):
    """A document to store; it is chunked and embedded by the retrieval service."""

    id: str = Field(
        min_length=1,
        max_length=MAX_DOCUMENT_ID_CHARS,
        description="Caller-chosen id, unique within the collection. Reusing one replaces it.",
        examples=["handbook-ch1"],
    )
    text: str = Field(min_length=1, description="Full text.", examples=["aimesh is ..."])
    metadata: FreeFormObject = Field(
        default_factory=dict,
        description="Arbitrary JSON kept with every chunk and returned by search.",
        examples=[{"lang": "en", "year": 2024}],
    )


class UpsertDocumentsRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "documents": [
                        {
                            "id": "about",
                            "text": "aimesh is an open AI backend.",
                            "metadata": {"lang": "en"},
                        }
                    ]
                }
            ]
        }
    )

    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST)

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_list(cls, data: Any) -> Any:
        """A bare JSON list of documents is accepted as ``{"documents": [...]}``.

        Normalized here rather than with a union body type so validation errors name one
        path (``body.documents.0.text``) instead of one per union member.
        """
        return {"documents": data} if isinstance(data, list) else data


class UpsertResult(BaseModel):
    id: str = Field(examples=["about"])
    chunks: int = Field(ge=0, description="Chunks stored for the document.", examples=[3])
    replaced: bool = Field(description="True when a document with this id was replaced.")


class UpsertDocumentsResponse(BaseModel):
    results: list[UpsertResult] = Field(description="One result per document, in request order.")


class DocumentInfo(BaseModel):
    id: str = Field(examples=["about"])
    chunks: int = Field(ge=0, examples=[3])
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"lang": "en"}])


class DocumentList(BaseModel):
    documents: list[DocumentInfo]


class DeleteDocumentResponse(BaseModel):
    deleted_chunks: int = Field(ge=0, description="Chunks removed.", examples=[3])
