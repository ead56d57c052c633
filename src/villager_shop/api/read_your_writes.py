"""Read-your-writes across standbys: the token a write returns, and the floor a read carries.

Every response to a request that wrote (and committed) carries the primary's WAL position after
the write, as the header `X-Villager-LSN` and the cookie `villager_lsn` (for browsers, which send
it back by themselves). A request that carries it (header, cookie, or both: the higher counts)
is read only from a standby that has replayed that far, else from the primary (api.replicas): a
client sees its own writes at once even while a standby lags. The token says nothing secret
(a WAL position) and grants nothing: a forged one can only send that client's reads to the primary.

With standbys configured, responses that read PostgreSQL also say where: `X-Villager-Read-From:
replica` or `primary` (none for an answer from the cache). A pure ASGI layer (no FastAPI layer
needed); without standbys it leaves reads alone and only marks writes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from villager_shop.core.wal import FLOOR, ReadFloor, format_lsn, parse_lsn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "X-Villager-LSN"
COOKIE = "villager_lsn"
SOURCE_HEADER = "X-Villager-Read-From"
# Long enough for any standby worth reading to catch up; after it the reads follow the lag bound alone.
COOKIE_MAX_AGE_S = 300
READS = frozenset({"GET", "HEAD"})
_HEADER = HEADER.lower().encode()


class InvalidToken(ValueError):
    pass


def token_of(headers: list[tuple[bytes, bytes]]) -> int:
    """The highest WAL position the request carries (0: none). A malformed header is refused (a
    client bug would otherwise lose its guarantee silently); a malformed cookie is ignored."""
    lsn = 0
    for name, value in headers:
        if name == _HEADER:
            parsed = parse_lsn(value.decode("latin-1"))
            if parsed is None:
                raise InvalidToken(f"{HEADER} must be a WAL position like 0/16B3748, as a write's response gives it")
            lsn = max(lsn, parsed)
        elif name == b"cookie":
            cookies: SimpleCookie = SimpleCookie()
            try:
                cookies.load(value.decode("latin-1"))
            except Exception:
                continue
            if COOKIE in cookies:
                lsn = max(lsn, parse_lsn(cookies[COOKIE].value) or 0)
    return lsn


class ReadYourWrites:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        routed = services is not None and services.reads.configured
        if not routed and scope["method"] in READS:
            await self.app(scope, receive, send)  # a read, and nowhere to send it but the primary
            return
        try:
            floor = ReadFloor(token_of(scope.get("headers", [])))
        except InvalidToken as exc:
            body = json.dumps({"detail": str(exc)}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if floor.written is not None:
                    token = format_lsn(floor.written).encode()
                    headers.append((_HEADER, token))
                    headers.append((b"set-cookie", b"%s=%s; Path=/; Max-Age=%d; SameSite=Lax; HttpOnly"
                                    % (COOKIE.encode(), token, COOKIE_MAX_AGE_S)))
                if routed and floor.source is not None:
                    headers.append((SOURCE_HEADER.lower().encode(), floor.source.encode()))
                message = {**message, "headers": headers}
            await send(message)

        reset = FLOOR.set(floor)
        try:
            await self.app(scope, receive, marked)
        finally:
            FLOOR.reset(reset)
