"""Create the source tables of the `sales_etl` example workflow, with made-up sales.

    FIGWAY_SECRET_ETL_SOURCE_PG=postgresql://postgres@127.0.0.1:5432/test \\
    FIGWAY_SECRET_ETL_SOURCE_MYSQL=mysql://root@127.0.0.1:3306/test \\
    .venv/bin/python examples/etl/seed.py [--orders 100000]

Reads the same two secrets the workflow's extract nodes use, so the nodes find
what this wrote. Orders go to PostgreSQL (`etl_orders`), customers to MySQL or
MariaDB (`etl_customers`); both are replaced on every run, and the same
arguments always give the same rows.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql

REGIONS = ("north", "south", "east", "west", "central")
CUSTOMERS = 1_000


def _secret(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"set {name} first (see this script's docstring)")
    return value


def seed_orders(url: str, orders: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS etl_orders")
        connection.execute(
            """
            CREATE TABLE etl_orders AS
            SELECT g AS id,
                   (g * 7919) %% %(customers)s + 1 AS customer_id,
                   ((g * 37) %% 10000 / 100.0)::numeric(10, 2) AS amount,
                   date '2026-01-01' + (g %% 365) AS ordered_on,
                   CASE WHEN g %% 50 = 0 THEN NULL ELSE 'web' END AS channel
            FROM generate_series(1, %(orders)s) AS g
            """,
            {"customers": CUSTOMERS, "orders": orders},
        )
        connection.execute("ALTER TABLE etl_orders ADD PRIMARY KEY (id)")


def seed_customers(url: str) -> None:
    parts = urlsplit(url)
    connection = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or None,
        autocommit=True,
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS etl_customers")
        cursor.execute(
            "CREATE TABLE etl_customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, "
            "region VARCHAR(16) NOT NULL)"
        )
        cursor.executemany(
            "INSERT INTO etl_customers (id, name, region) VALUES (%s, %s, %s)",
            [
                (i, f"customer {i}", REGIONS[(i * 3) % len(REGIONS)])
                for i in range(1, CUSTOMERS + 1)
            ],
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000, help="orders to make (100000)")
    args = parser.parse_args(argv)
    seed_orders(_secret("FIGWAY_SECRET_ETL_SOURCE_PG"), args.orders)
    print(f"etl_orders: {args.orders} rows in PostgreSQL")
    seed_customers(_secret("FIGWAY_SECRET_ETL_SOURCE_MYSQL"))
    print(f"etl_customers: {CUSTOMERS} rows in MySQL")


if __name__ == "__main__":
    main()
