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
    budgets,
    chat,
    collections,
    conversations,
    documents,
    embeddings,
    feedback,
    files,
    health,
    jobs,
    models,
    responses,
    search,
    summarize,
    usage,
    vector_stores,
)

# FastAPI tries the routers in this order on every request, so the busiest (the OpenAI
# routes, search and ask) come first, then the probes (a few per pod per minute); no two
# routers' paths overlap, so order changes nothing else.
routers: tuple[APIRouter, ...] = (
    chat.router,
    responses.router,
    models.router,
    embeddings.router,
    search.router,
    ask.router,
    health.router,
    summarize.router,
    conversations.router,
    documents.router,
    jobs.router,
    collections.router,
    files.router,
    vector_stores.router,
    feedback.router,
    auth.router,
    admin.router,
    budgets.router,
    usage.router,
    conversations.admin_router,
)
