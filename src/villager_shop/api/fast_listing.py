"""The cached listing and product pages below FastAPI: a pure ASGI middleware answers
`GET /api/products` straight from the cache when the request is a plain one (only `category`, `q`,
`limit`, `cursor`, each at most once, within the route's limits) and Redis holds the page, and
`GET /api/products/{id}` (canonical UUID, no query) likewise; everything else — another path
or method, any other or odd parameter, invalid input, a miss, Redis skipped or failing — goes on to
FastAPI unchanged, which answers exactly as before (validation errors, the rebuild, PostgreSQL).
The same validation and cache key as the route (services.catalog.listing_key), so both serve the
same entry; the request is counted under the route's template (scope["route"], learnt from the
first request of each kind, which is always left to FastAPI)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from villager_shop.api.errors import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/api/products"
PRODUCT_PREFIX = PATH + "/"
PRODUCT_TEMPLATE = "/api/products/{product_id}"
MAX_LENGTH = {"category": 100, "q": 100, "cursor": 200}  # the route's Query(max_length=...)
LIMIT = re.compile(r"[1-9][0-9]{0,2}")
MEMO_SIZE = 4096


def plain_listing(query_string: bytes) -> dict[str, Any] | None:
    """The listing's arguments when the route would accept them as they are, else None."""
    args: dict[str, Any] = {}
    # as Starlette parses it (latin-1 bytes, then UTF-8 percent-decoding)
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in args:
            return None
        if key == "limit":
            if not LIMIT.fullmatch(value):
                return None
            args[key] = int(value)
        elif key in MAX_LENGTH:
            if len(value) > MAX_LENGTH[key] or (key == "category" and not value):
                return None
            args[key] = value
        else:
            return None
    return args


def canonical_uuid(text: str) -> uuid.UUID | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text else None


class FastListing:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[str, Any] = {}
        # query string -> the listing's cache entry (name, parts): a popular page is parsed once
        self._listings: dict[bytes, tuple[str, tuple[str, ...]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith(PATH):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        services = getattr(scope["app"].state, "services", None)
        template = PATH if path == PATH else PRODUCT_TEMPLATE
        route = self._routes.get(template)
        body = None
        if route is not None and services is not None:
            try:
                if path == PATH:
                    query: bytes = scope.get("query_string", b"")
                    entry = self._listings.get(query)
                    if entry is None:
                        args = plain_listing(query)
                        if args is not None:
                            entry = services.catalog.listing_entry(**args)  # raises on invalid input
                            if len(self._listings) >= MEMO_SIZE:
                                self._listings.clear()
                            self._listings[query] = entry
                    if entry is not None:
                        body = await services.catalog.cached(*entry)
                elif not scope.get("query_string"):
                    product_id = canonical_uuid(path.removeprefix(PRODUCT_PREFIX))
                    if product_id is not None:
                        body = await services.catalog.cached_product(product_id)
            except ApiError:
                body = None  # the route answers the error
        if body is None:
            await self.app(scope, receive, send)
            if route is None and getattr(scope.get("route"), "path", None) == template:
                self._routes[template] = scope["route"]  # learnt from the router: fast path on from now
            return
        scope["route"] = route
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
