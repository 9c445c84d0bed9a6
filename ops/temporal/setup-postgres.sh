#!/bin/sh
# One-shot schema setup of Temporal's two Postgres databases (persistence and visibility), run by
# the temporal-admin-tools service before the server starts. The same steps as Temporal's own
# compose files: `update-schema` applies only the versions a database lacks, so re-running it
# (every `docker compose up`, or after an image upgrade) migrates instead of failing.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:=temporal}"
# temporal-sql-tool reads the password from SQL_PASSWORD; never put it on a command line.
export SQL_PASSWORD="${SQL_PASSWORD:-${POSTGRES_PWD:-}}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$DB_PORT"
attempt=0
until nc -z -w 2 "$POSTGRES_SEEDS" "$DB_PORT"; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 60 ] || { echo "PostgreSQL never answered" >&2; exit 1; }
  sleep 1
done

for pair in "temporal:temporal" "temporal_visibility:visibility"; do
  db=${pair%%:*}
  schema=${pair#*:}
  echo "schema of $db"
  sql_tool --db "$db" create
  sql_tool --db "$db" setup-schema -v 0.0
  sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$schema/versioned"
done
echo "PostgreSQL schemas are up to date"
