"""OpenAI's vector-store API shape, served over aimesh collections.

Request models refuse names they do not know (422 naming the field); OpenAI parameters
aimesh cannot honour (``expires_after``, a static chunking above the embedding model's
window, ...) are accepted by the models and refused by the routes with a 400 naming them,
never dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator

from aimesh_gateway.schemas.common import StrictModel

# What names a file or a vector store in a request: the services' own checks decide whether
# it exists (an unknown id is a 404, as at OpenAI, rather than a 422).
OBJECT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_PAIRS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
MAX_FILE_IDS = 20
"""Files one request may add (a vector store's ``file_ids``, a batch): each is parsed in
the request, so the request stays well within its deadline."""


def _pairs(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > MAX_PAIRS:
        raise ValueError(f"at most {MAX_PAIRS} key-value pairs")
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            raise ValueError(f"keys have 1 to {MAX_KEY_CHARS} characters")
        if isinstance(item, str) and len(item) > MAX_VALUE_CHARS:
            raise ValueError(f"{key!r}: string values have at most {MAX_VALUE_CHARS} characters")
    return value


Metadata = Annotated[
    dict[str, str] | None,
    AfterValidator(_pairs),
    Field(
        description=f"Up to {MAX_PAIRS} string pairs (keys up to {MAX_KEY_CHARS} characters, "
        f"values up to {MAX_VALUE_CHARS}).",
        examples=[{"team": "hr"}],
    ),
]
Attributes = Annotated[
    dict[str, str | bool | float] | None,
    AfterValidator(_pairs),
    Field(
        description=f"Up to {MAX_PAIRS} pairs kept with every chunk of the file and returned by "
        "file_search results; values are strings, numbers or booleans.",
        examples=[{"lang": "en"}],
    ),
]
ObjectId = Annotated[str, Field(pattern=OBJECT_ID_PATTERN, examples=["file-3f2a9c0d"])]


class StaticChunking(StrictModel):
    max_chunk_size_tokens: int = Field(
        ge=100,
        le=4096,
        description="Longest chunk in tokens; aimesh serves at most 254 (the embedding "
        "model's window), a larger value is a 400.",
    )
    chunk_overlap_tokens: int = Field(ge=0, description="At most half the chunk size.")

    @model_validator(mode="after")
    def _overlap_within_half(self) -> Self:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class ChunkingStrategy(StrictModel):
    type: Literal["auto", "static"]
    static: StaticChunking | None = None

    @model_validator(mode="after")
    def _static_when_static(self) -> Self:
        if (self.type == "static") != (self.static is not None):
            raise ValueError('"static" is given with type "static", and only then')
        return self


class CreateVectorStoreRequest(StrictModel):
    name: str | None = Field(None, max_length=256, examples=["Handbook"])
    description: str | None = Field(None, max_length=512)
    metadata: Metadata = None
    file_ids: list[ObjectId] | None = Field(
        None, max_length=MAX_FILE_IDS, description="Files to add (POST /v1/files) at once."
    )
    chunking_strategy: ChunkingStrategy | None = Field(
        None,
        description='"auto" (the collection defaults), or "static" with at most 254 tokens '
        "per chunk: the collection's chunking.",
    )
    expires_after: dict[str, Any] | None = Field(
        None, description="Not served: vector stores do not expire here (400)."
    )


class UpdateVectorStoreRequest(StrictModel):
    name: str | None = Field(None, max_length=256)
    metadata: Metadata = None
    expires_after: dict[str, Any] | None = Field(None, description="Not served (400).")


class CreateVectorStoreFileRequest(StrictModel):
    file_id: ObjectId
    attributes: Attributes = None
    chunking_strategy: ChunkingStrategy | None = Field(
        None,
        description='The collection\'s chunking applies to every file: only "auto", or a '
        "static one equal to it, is accepted (400 otherwise).",
    )


class BatchFile(StrictModel):
    file_id: ObjectId
    attributes: Attributes = None
    chunking_strategy: ChunkingStrategy | None = None


class CreateFileBatchRequest(StrictModel):
    file_ids: list[ObjectId] | None = Field(None, min_length=1, max_length=MAX_FILE_IDS)
    files: list[BatchFile] | None = Field(None, min_length=1, max_length=MAX_FILE_IDS)
    attributes: Attributes = None
    chunking_strategy: ChunkingStrategy | None = None

    @model_validator(mode="after")
    def _one_list(self) -> Self:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give file_ids or files, not both")
        return self


class SearchVectorStoreRequest(StrictModel):
    query: str | Annotated[list[str], Field(min_length=1, max_length=16)] = Field(
        description="The query (a list is joined into one; the retrieval service bounds its "
        "length)."
    )
    max_num_results: int = Field(10, ge=1, le=50)
    filters: dict[str, Any] | None = Field(
        None,
        description='OpenAI\'s attribute filter: {"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|'
        '"in"|"nin", "key", "value"} or {"type": "and"|"or", "filters": [...]}.',
    )
    rewrite_query: bool = Field(False, description="Only false is served (400 otherwise).")
    ranking_options: dict[str, Any] | None = Field(
        None, description="Only score_threshold is served (ranker: auto or omitted)."
    )


# ---------------------------------------------------------------- responses


class FileCounts(BaseModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStoreObject(BaseModel):
    """A vector store: an aimesh collection (``id`` is its name)."""

    id: str = Field(examples=["vs_3f2a9c0d6b1e4f5a8c7d9e0f1a2b3c4d"])
    object: Literal["vector_store"] = "vector_store"
    created_at: int = Field(
        description="Unix time (seconds); 0 for a collection not created through this API."
    )
    name: str
    description: str | None = None
    usage_bytes: int = Field(0, description="Text bytes of the files added through this API.")
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    last_active_at: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    expires_after: None = None
    expires_at: None = None


class VectorStoreList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreDeleted(BaseModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class LastError(BaseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class StaticChunkingOut(BaseModel):
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int


class ChunkingStrategyOut(BaseModel):
    type: Literal["static"] = "static"
    static: StaticChunkingOut


class VectorStoreFileObject(BaseModel):
    """A file added to a vector store; ``status`` follows its ingestion job."""

    id: str = Field(description="The file's id.")
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: LastError | None = None
    usage_bytes: int = Field(0, description="Bytes of the text extracted from the file.")
    attributes: dict[str, str | bool | float] = Field(default_factory=dict)
    chunking_strategy: ChunkingStrategyOut | None = None


class VectorStoreFileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreFileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreFileDeleted(BaseModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class FileBatchObject(BaseModel):
    id: str = Field(examples=["vsfb_3f2a9c0d6b1e4f5a8c7d9e0f1a2b3c4d"])
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


class VectorStoreSearchContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class VectorStoreSearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, str | bool | float] = Field(default_factory=dict)
    content: list[VectorStoreSearchContent]


class VectorStoreSearchPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[VectorStoreSearchResult]
    has_more: bool = False
    next_page: str | None = None
