#!/usr/bin/env bash
# Runs once, when the postgres service starts on an empty data volume (the image runs
# every script in /docker-entrypoint-initdb.d). Creates figway's database and Prefect's,
# each owned by a role of its own, and the login role figway's workers use. Names and passwords come from the service's environment
# (compose/.env); psql's :"name" and :'value' quote them, so no value is spliced into SQL.
# Changing them later in .env does not change the database: use psql, or start on a new
# volume.
set -Eeo pipefail

create() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$1" -v password="$2" -v database="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"role";
SQL
}

create "$FIGWAY_DB_USER" "$FIGWAY_DB_PASSWORD" "$FIGWAY_DB_NAME"
create "$PREFECT_DB_USER" "$PREFECT_DB_PASSWORD" "$PREFECT_DB_NAME"

# The workers' role: it logs in, and `figway db grant-worker` (the migrate service) gives
# it exactly what workers need on figway's tables, nothing more.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$FIGWAY_WORKER_DB_USER" -v password="$FIGWAY_WORKER_DB_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
