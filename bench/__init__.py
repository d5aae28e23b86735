"""figway's benchmarks on real PostgreSQL and Redis.

- the RQ path against plain RQ: ``python -m bench.rq_path``;
- the Prefect path against plain Prefect, on a Prefect server of its own:
  ``python -m bench.prefect_path``.

Results are printed as Markdown and written as JSON under ``bench/results/``;
``docs/performance.md`` reports and reads one such run.
"""
