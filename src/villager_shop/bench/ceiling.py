"""The throughput ceiling of `bench api`: a bare ASGI app that answers a constant JSON body.

Served by uvicorn with the same worker count and settings as `villager-shop serve`, so
`cached listing rps / ceiling rps` measures what the framework, Redis and our code cost on top of
uvicorn itself on this machine, in the same run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

BODY = b'{"hello":"villager"}'
_START = {"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}
_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: Message, receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)
