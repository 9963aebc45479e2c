"""Every JSON request body is checked once, here, before validation: nesting depth, integer
size, finite numbers, valid Unicode strings (:mod:`aimesh_common.jsonlimits`).

Each router is built with ``route_class=CheckedJSONRoute`` (a test checks that every route
of the app is), so its routes parse the body with :func:`aimesh_common.jsonlimits.loads`
instead of ``json.loads``; a body past a limit is a 400 problem naming the place, before
any handler or backend sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from aimesh_common.jsonlimits import MAX_BODY_DEPTH, JsonLimitError, loads


class CheckedJSONRequest(Request):
    """A request whose ``json()`` keeps to the body limits (400 otherwise)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads(body, "body", max_depth=MAX_BODY_DEPTH)
            except JsonLimitError as error:
                raise HTTPException(400, f"request body refused: {error}") from None
            except UnicodeDecodeError:
                raise HTTPException(400, "request body is not valid UTF-8") from None
        return self._json


class CheckedJSONRoute(APIRoute):
    """A route whose JSON body goes through :class:`CheckedJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(CheckedJSONRequest(request.scope, request.receive))

        return checked
