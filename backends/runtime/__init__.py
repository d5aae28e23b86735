"""The node runtime both executors share: one attempt of one node (``attempts``), how a
worker process gets its runtime (``bootstrap``), and ``secret:`` references (``secrets``).

May import ``backends.model``, ``backends.store``, ``backends.nodes`` and
``backends.artifacts``; never an executor, never ``gateway``.
"""
