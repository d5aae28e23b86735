"""The front door: what a client or an operator talks to.

``web`` (the HTTP and WebSocket API), ``cli`` (the ``figway`` command), ``dispatch``
(starting, killing and reconciling runs), ``routing`` (rules, router, guards,
shadows), ``reports`` (comparison, readiness), ``live``, ``metrics``, ``upkeep``
(periodic work), and ``services.py``, the one composition root. May import
``backends``, but sees executors only through ``backends.contract``.
"""
