"""figway's benchmarks: its two paths on real PostgreSQL and Redis, and routing in-process.

- the RQ path against plain RQ: ``python -m bench.rq_path``;
- the Prefect path against plain Prefect, on a Prefect server of its own:
  ``python -m bench.prefect_path``;
- the ETL nodes end to end (PostgreSQL -> DuckDB -> PostgreSQL) on both
  backends, against ``psql``'s COPY and a plain script, with the workers' peak
  memory: ``python -m bench.etl``;
- one routing decision with 1,000 rules, in-process, against a naive
  first-match loop: ``python -m bench.routing`` (no service needed).

Results are printed as Markdown and written as JSON under ``bench/results/``
(the routing benchmark's where ``--json PATH`` says); ``docs/performance.md``
reports and reads such runs.
"""
