"""The domain model: workflow definitions and plans, the DAG, statuses, the exception tree.

Pure: no I/O, and it imports nothing of figway outside ``backends.model``, so every
other package may depend on it.
"""
