"""How late each worker's event loop runs what is due: the wait a request spends before its handler
starts (behind other requests' Python code, a blocking call, a slow callback), which the request
timer cannot see because it starts with the handler."""

from __future__ import annotations

import asyncio

from villager_shop.monitoring.metrics import EVENT_LOOP_LAG


async def watch_event_loop(interval_s: float = 0.05) -> None:
    """Sleep `interval_s` again and again; record by how much each wake-up came late."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        EVENT_LOOP_LAG.observe(max(0.0, loop.time() - due))
