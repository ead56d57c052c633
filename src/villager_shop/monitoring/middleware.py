"""Counting HTTP requests by route template and status, and timing them: a pure ASGI middleware
(no BaseHTTPMiddleware, no request object, no body buffering), so the cost per request is two
clock reads, one dict lookup and two metric updates.

The route template comes from `scope["route"]`, which Starlette's router sets when a route matches:
`/api/products/{product_id}`, never the raw path (one series per route, not per product id).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from villager_shop.monitoring.metrics import HTTP_LATENCY, HTTP_REQUESTS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (method, route, status) -> (counter child, histogram child): .labels() once per series
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, status, time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope.get("method", "GET")
        if method not in KNOWN_METHODS:
            method = "OTHER"
        key = (method, route_of(scope), status)
        children = self._children.get(key)
        if children is None:
            children = (HTTP_REQUESTS.labels(method, key[1], str(status)), HTTP_LATENCY.labels(method, key[1]))
            if len(self._children) < 10_000:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
