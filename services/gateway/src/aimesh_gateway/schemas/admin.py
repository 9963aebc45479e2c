"""Admin API: API keys, local users and rate-limit overrides."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aimesh_gateway.schemas.common import RequestModel

TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
USERNAME_PATTERN = r"^[A-Za-z0-9_.@+-]+$"
RoleName = Literal["admin", "editor", "user"]
TenantId = Annotated[
    str,
    Field(pattern=TENANT_ID_PATTERN, description="Tenant id.", examples=["acme"]),
]
Limit = Annotated[int, Field(ge=1, le=10_000_000)]


class KeyCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A label for people.")
    roles: list[RoleName] = Field(min_length=1, max_length=3, examples=[["user"]])
    tenant_id: TenantId | None = Field(
        None,
        description="Tenant of the key; only the bootstrap admin key may name another "
        "tenant than its own. Default: the caller's tenant.",
    )
    expires_at: datetime | None = Field(None, description="When the key stops working (UTC).")
    rpm: Limit | None = Field(None, description="Requests per minute (default: server's).")
    tpm: Limit | None = Field(None, description="Tokens per minute (default: server's).")


class KeyInfo(BaseModel):
    id: str
    prefix: str = Field(description="The public part of the key (am_<prefix>_...).")
    tenant_id: str
    name: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    rpm: int | None
    tpm: int | None


class KeyCreated(KeyInfo):
    key: str = Field(description="The API key. Shown once: store it now.")


class KeyList(BaseModel):
    keys: list[KeyInfo]


class Limits(RequestModel):
    model_config = ConfigDict(extra="forbid")

    rpm: Limit | None = Field(None, description="Requests per minute; null: server default.")
    tpm: Limit | None = Field(None, description="Tokens per minute; null: server default.")


class UserCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128, pattern=USERNAME_PATTERN)
    password: str = Field(min_length=12, max_length=1024)
    roles: list[RoleName] = Field(min_length=1, max_length=3)


class UserInfo(BaseModel):
    """A local user (never its password or hash)."""

    id: str
    username: str
    tenant_id: str
    roles: list[str]
    created_at: datetime
    disabled_at: datetime | None = Field(
        description="When the user was disabled; null while it may log in."
    )


class UserList(BaseModel):
    users: list[UserInfo]


class UserUpdate(RequestModel):
    """What to change; at least one field. Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    roles: list[RoleName] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="The user's new roles (replace the old ones from its next login or refresh).",
        examples=[["editor"]],
    )
    disabled: bool | None = Field(
        None,
        description="true: the user can no longer log in or refresh, and its refresh tokens "
        "are revoked; false: it may log in again.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> UserUpdate:
        if self.roles is None and self.disabled is None:
            raise ValueError("name at least one of roles, disabled")
        return self
