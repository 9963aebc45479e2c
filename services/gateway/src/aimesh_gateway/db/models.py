"""The tables. Every row that belongs to a tenant carries ``tenant_id``; queries filter by it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """An API key. Only the SHA-256 of the secret is stored: the secret is 256 random bits,
    so a fast hash is as safe as a slow one and keeps the per-request check cheap."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    roles: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)


class User(Base):
    """A local user of the front end; the password is stored as an argon2id hash."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    roles: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RefreshToken(Base):
    """A refresh token (stored as its SHA-256); used once, then replaced (rotation)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(32), ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TenantLimit(Base):
    """Per-tenant rate-limit overrides (requests and tokens per minute)."""

    __tablename__ = "tenant_limits"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageRecord(Base):
    """Tokens spent by one call, for accounting; also what answered it (for feedback)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_tenant_time", "tenant_id", "created_at"),
        Index("ix_usage_records_created_at", "created_at"),  # retention (stores/usage.py)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # X-Request-ID of the HTTP request that made the call ("" for rows from before 0002).
    request_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    # Provider kind that answered ("local", "openai", ...) and the prompt template used
    # ("qa/v1"); "" when unknown or none.
    provider: Mapped[str] = mapped_column(String(64), default="")
    prompt_version: Mapped[str] = mapped_column(String(64), default="")
    # True when the counts are estimates: the provider reported none, or the call ended
    # early (the client left, the stream failed) and what it had spent was counted.
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    # Cost in US dollars at the prices of the alias that answered (0 when unpriced, and for
    # rows from before 0005): the one cost of record, which budgets are rebuilt from too.
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class Budget(Base):
    """A spending cap in US dollars over a window, for one API key, user or a whole tenant,
    optionally narrowed to one model alias (see ``limits/budgets.py``)."""

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("scope IN ('key', 'user', 'tenant')", name="ck_budgets_scope"),
        CheckConstraint("period IN ('day', 'month', 'rolling')", name="ck_budgets_period"),
        CheckConstraint("mode IN ('hard', 'soft')", name="ck_budgets_mode"),
        Index("ix_budgets_tenant", "tenant_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    # The API key's id (scope key) or the user's subject (scope user); "" for the tenant.
    subject: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(200), default="")  # "": every alias
    period: Mapped[str] = mapped_column(String(16))  # day, month or rolling (the window)
    rolling_seconds: Mapped[int] = mapped_column(Integer, default=0)
    limit_micros: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(16), default="hard")
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Feedback(Base):
    """A rating of one answer by one subject; rating the same answer again replaces it.

    What answered (route, model, provider, prompt version) is copied from the usage record
    of the request, so summaries need no join and survive usage retention.
    """

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("tenant_id", "request_id", "subject", name="uq_feedback_subject"),
        CheckConstraint("rating IN (1, -1)", name="ck_feedback_rating"),
        Index("ix_feedback_tenant_time", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(128))
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    route: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    provider: Mapped[str] = mapped_column(String(64), default="")
    prompt_version: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StoredFile(Base):
    """A file uploaded with OpenAI's files API (``POST /v1/files``) to be added to vector
    stores. Its bytes are in :class:`FileContent`, so listing files never reads them."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_time", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FileContent(Base):
    """The bytes of a :class:`StoredFile` (at most the upload limit of one file)."""

    __tablename__ = "file_contents"

    file_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    content: Mapped[bytes] = mapped_column(LargeBinary)


class VectorStore(Base):
    """What OpenAI's vector-store API adds to a collection (the retrieval service owns the
    collection itself): the display name, description and metadata, and when it was created
    through ``POST /v1/vector_stores``. ``id`` is the collection's name."""

    __tablename__ = "vector_stores"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VectorStoreFile(Base):
    """A file added to a vector store: the ingestion job that stores its documents in the
    collection, the job's last known outcome, and the documents' ids (to remove them)."""

    __tablename__ = "vector_store_files"
    __table_args__ = (
        CheckConstraint(
            "status IN ('in_progress', 'completed', 'failed', 'cancelled')",
            name="ck_vector_store_files_status",
        ),
        Index("ix_vector_store_files_store", "tenant_id", "vector_store_id", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector_store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "" when no job was started (the file could not be parsed).
    job_id: Mapped[str] = mapped_column(String(32), default="")
    batch_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))
    # OpenAI's last_error: server_error, unsupported_file or invalid_file, and a message.
    error_code: Mapped[str] = mapped_column(String(32), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attributes_json: Mapped[str] = mapped_column(Text, default="{}")
    document_ids_json: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
