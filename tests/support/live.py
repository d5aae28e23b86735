"""Following a run's live feed as a WebSocket client does, for tests."""

from __future__ import annotations

import websockets

__all__ = ["close_of"]


async def close_of(url: str, headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Read the feed at ``url`` to its end: the close code and reason the server sent."""
    async with websockets.connect(url, additional_headers=headers) as socket:
        try:
            while True:
                await socket.recv()
        except websockets.ConnectionClosed:
            pass
        return socket.close_code, socket.close_reason or ""
