#!/bin/sh
# One-shot (compose `mlflow-db`): the `mlflow` database on the compose Postgres, created once.
set -eu
if psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1; then
    echo "database mlflow exists"
else
    psql -c "CREATE DATABASE mlflow"
fi
