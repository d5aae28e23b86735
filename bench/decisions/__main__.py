"""``python -m bench.decisions``: see ``bench/decisions/__init__.py``."""

from __future__ import annotations

from bench.decisions import main

if __name__ == "__main__":
    raise SystemExit(main())
