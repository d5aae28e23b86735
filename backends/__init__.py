"""What runs the work, and the record it keeps: the executor contract, the RQ and
Prefect executors, the node runtime and node types, artifacts, the domain model and
the store. Never imports ``gateway`` (ruff's banned imports enforce it): workers load
this package and nothing of the web layer.
"""
