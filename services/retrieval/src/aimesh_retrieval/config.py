"""Settings of the retrieval service (environment variables with the ``AIMESH_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from aimesh_common.settings import GrpcServiceSettings, service_addr


class Settings(GrpcServiceSettings):
    """Where the service listens, where Milvus is, and how documents are chunked."""

    # populate_by_name lets tests pass embedding_service_addr=... next to the env aliases.
    model_config = SettingsConfigDict(populate_by_name=True)

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9092, ge=0, le=65535, description="Prometheus port; unset disables it, 0 picks a free one."
    )
    data_dir: Path = Field(
        Path(".aimesh"), description="Local state; holds the Milvus Lite file by default."
    )
    milvus_uri: str = Field(
        "",
        description=(
            "Empty: Milvus Lite file <data_dir>/milvus.db. http(s)://host:19530: a Milvus server."
        ),
    )
    milvus_token: SecretStr | None = Field(
        None, description="Milvus server token ('user:password' or an API key)."
    )
    milvus_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Deadline of one Milvus call."
    )
    milvus_workers: int = Field(
        4, ge=1, le=64, description="Threads that run the synchronous Milvus client."
    )
    embedding_service_addr: str = service_addr("EMBEDDING_SERVICE_ADDR", "localhost:50051")
    embed_batch_size: int = Field(
        64, ge=1, le=2048, description="Chunks per Embed call to the embedding service."
    )
    embed_concurrency: int = Field(
        2, ge=1, le=32, description="Embed calls one upsert keeps in flight at once."
    )
    embed_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="Deadline of one Embed call."
    )
    # A chunk is stored in a VARCHAR(65535); 16,000 characters stay below it even when
    # every character takes four bytes in UTF-8.
    chunk_size: int = Field(800, ge=50, le=16_000, description="Longest chunk, in characters.")
    chunk_overlap: int = Field(120, ge=0, description="Characters shared by neighbouring chunks.")
    max_documents_per_request: int = Field(100, ge=1, le=10_000)
    max_document_chars: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    @property
    def milvus_is_server(self) -> bool:
        """True when ``milvus_uri`` names a Milvus server rather than a Lite file."""
        return self.milvus_uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    @property
    def resolved_milvus_uri(self) -> str:
        """The URI handed to ``MilvusClient``: the server, or the Lite file path."""
        if not self.milvus_uri:
            return str(self.data_dir / "milvus.db")
        return self.milvus_uri
