"""The executor contract suite and its two implementations (RQ and Prefect)."""
