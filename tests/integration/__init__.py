"""The production stack: real gateways, RQ workers and Prefect workers on PostgreSQL and Redis."""
