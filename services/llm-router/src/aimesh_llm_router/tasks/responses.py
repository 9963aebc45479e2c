"""The stored responses of the OpenAI Responses API: kept, read and deleted for their owner.

The gateway builds a response (and the context a later ``previous_response_id`` continues
from); the router owns where it lives, who may read it and how long: the conversation store
(:mod:`aimesh_llm_router.conversations`), for ``responses_retention_seconds``.
"""

from __future__ import annotations

import json
import time

from aimesh.llm.v1 import llm_pb2
from aimesh_common.errors import InvalidArgument
from aimesh_llm_router.conversations import ResponseRecord
from aimesh_llm_router.tasks.common import TaskDeps
from aimesh_llm_router.tasks.conversations import check_owner

MAX_RESPONSE_ID_CHARS = 128
JSON_MEMBERS = ("response_json", "input_items_json", "context_json")


def _message(record: ResponseRecord) -> llm_pb2.StoredResponse:
    return llm_pb2.StoredResponse(
        id=record.id,
        tenant_id=record.tenant_id,
        user_id=record.user_id,
        previous_response_id=record.previous_response_id,
        created_at=record.created_at,
        expires_at=record.expires_at,
        response_json=record.response_json,
        input_items_json=record.input_items_json,
        context_json=record.context_json,
    )


def _check_id(response_id: str, field: str) -> None:
    if not 0 < len(response_id) <= MAX_RESPONSE_ID_CHARS:
        raise InvalidArgument(f"{field} must have 1 to {MAX_RESPONSE_ID_CHARS} characters")


async def store(deps: TaskDeps, request: llm_pb2.StoredResponse) -> llm_pb2.StoredResponse:
    """Keep the response for the retention period; the stored record (with expires_at)."""
    check_owner(request.tenant_id, request.user_id)
    _check_id(request.id, "id")
    if request.previous_response_id:
        _check_id(request.previous_response_id, "previous_response_id")
    for name in JSON_MEMBERS:
        try:
            json.loads(getattr(request, name))
        except ValueError:
            raise InvalidArgument(f"{name} must be JSON text") from None
    now = time.time()
    record = ResponseRecord(
        id=request.id,
        tenant_id=request.tenant_id,
        user_id=request.user_id,
        previous_response_id=request.previous_response_id,
        created_at=request.created_at or now,
        expires_at=now + deps.responses_retention_seconds,
        response_json=request.response_json,
        input_items_json=request.input_items_json,
        context_json=request.context_json,
    )
    await deps.conversations.put_response(record)
    return _message(record)


async def get(deps: TaskDeps, request: llm_pb2.GetResponseRequest) -> llm_pb2.StoredResponse:
    check_owner(request.tenant_id, request.user_id)
    _check_id(request.response_id, "response_id")
    record = await deps.conversations.get_response(
        request.tenant_id, request.user_id, request.response_id
    )
    return _message(record)


async def delete(deps: TaskDeps, request: llm_pb2.GetResponseRequest) -> None:
    check_owner(request.tenant_id, request.user_id)
    _check_id(request.response_id, "response_id")
    await deps.conversations.delete_response(
        request.tenant_id, request.user_id, request.response_id
    )
