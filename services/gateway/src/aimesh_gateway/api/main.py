"""The routers of the app: probes at the root, the API under /v1.

Each router carries its full path prefix itself (rather than getting it at inclusion), so the
matched route's path is the full template, which the metrics and access log label by.
"""

from __future__ import annotations

from fastapi import APIRouter

from aimesh_gateway.api.routes import (
    admin,
    ask,
    auth,
    chat,
    collections,
    conversations,
    documents,
    embeddings,
    feedback,
    health,
    jobs,
    models,
    search,
    summarize,
    usage,
)

routers: tuple[APIRouter, ...] = (
    health.router,
    auth.router,
    admin.router,
    collections.router,
    jobs.router,
    documents.router,
    search.router,
    ask.router,
    summarize.router,
    chat.router,
    conversations.router,
    models.router,
    embeddings.router,
    feedback.router,
    usage.router,
)
