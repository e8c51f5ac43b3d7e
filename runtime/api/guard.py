"""Who may call the HTTP API (``/v1``): the app's backend, with the API key.

With ``TANDEM_API_KEY`` set, every ``/v1`` request needs
``Authorization: Bearer <key>`` (compared in constant time). The production
profile without a key refuses the API entirely; the dev profile without a key
leaves it open, for local experiments. Writes are recorded in the audit log.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from runtime.http import HttpRequest, HttpResponse, error_response

if TYPE_CHECKING:
    from runtime.node import TandemNode

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def api_guard(node: TandemNode) -> Callable[[Handler], Handler]:
    settings = node.settings
    expected = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    def guard(handler: Handler) -> Handler:
        async def guarded(request: HttpRequest) -> HttpResponse:
            if expected is not None:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    await node.audit(
                        "api.denied", request.peer, request.path, {"method": request.method}
                    )
                    return error_response(
                        401, "auth_required", "send Authorization: Bearer <api key>"
                    )
            elif settings.is_production:
                return error_response(403, "forbidden", "the HTTP API needs TANDEM_API_KEY")
            response = await handler(request)
            if request.method != "GET" and response.status < 400:
                await node.audit(
                    f"api.{request.method.lower()}",
                    "api",
                    request.path,
                    {"status": response.status},
                )
            return response

        return guarded

    return guard
