"""The RFC 9457 problem document, for the OpenAPI description of error responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aimesh_gateway.core.errors import PROBLEM_MEDIA_TYPE


class FieldError(BaseModel):
    field: str = Field(examples=["body.top_k"])
    message: str = Field(examples=["Input should be less than or equal to 100"])
    type: str = Field(examples=["less_than_equal"])


class Problem(BaseModel):
    """An error (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", examples=["about:blank"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str | None = Field(None, examples=["collection 'docs' does not exist"])
    instance: str | None = Field(None, examples=["/v1/collections/docs/search"])
    request_id: str | None = Field(None, examples=["6f1c2e0b9a7d4c1e8f3a2b5c4d6e7f80"])
    errors: list[FieldError] | None = Field(
        None, description="The offending fields (validation errors only)."
    )


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response entry whose body is a Problem (registered by ``main``)."""
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# Error responses every authenticated route can give, for the OpenAPI document.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: problem_doc("Malformed request (e.g. invalid JSON)."),
    401: problem_doc("Missing or invalid credential."),
    403: problem_doc("The credential lacks the required role."),
    413: problem_doc("Request body too large."),
    422: problem_doc("Request validation failed; `errors` names the fields."),
    429: problem_doc("A backend is overloaded; retry later."),
    502: problem_doc("A backend failed."),
    503: problem_doc("A backend is unavailable; retry later."),
    504: problem_doc("A backend did not answer in time."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: problem_doc("Collection or document not found.")}
