"""The HTTP and WebSocket API: the app factory, routes, auth, limits, schemas, errors.

Imported only by the composition root's callers (``gateway.cli``) and tests: no
other gateway package imports the web layer (ruff's banned imports enforce it).
"""
