"""How the live feed's WebSocket closes, as its server sends and its clients read it.

Codes 4000-4999 are the application's: 4400 + an HTTP status says the same as that
status would (4401 no valid key, 4403 not allowed, 4404 no such run, 4429 too many).
"""

from __future__ import annotations

__all__ = ["CLOSE_TOO_MANY", "CLOSE_TOO_SLOW", "CLOSE_UNKNOWN_RUN", "WEBSOCKET_CLOSE"]

#: A refused key, a forbidden origin or too many requests, by HTTP status.
WEBSOCKET_CLOSE = {401: 4401, 403: 4403, 429: 4429}
#: A run figway does not know.
CLOSE_UNKNOWN_RUN = 4404
#: 1013 "try again later": the client fell too far behind; reconnecting gives a fresh snapshot.
CLOSE_TOO_SLOW = 1013
#: 1013 as well: too many clients follow runs with this key or on this gateway.
CLOSE_TOO_MANY = 1013
