"""figway's benchmarks: the RQ path on real PostgreSQL and Redis (``python -m bench.rq_path``).

Results are printed as Markdown and written as JSON under ``bench/results/``;
``docs/performance.md`` reports and reads one such run.
"""
