"""The event gateway (`retrain gateway`): cloud and monitoring events over HTTP in, trigger
events to the coordinators out, with a durable intake and a dead-letter store (`retrain dlq`).

Modules: `app` (HTTP), `auth` (per-source secrets), `sources` (which payloads each endpoint
takes), `routing` (event -> model), `database` / `pending` / `dead_letters` (SQLite),
`intake` (group commits), `delivery` (batched signals, retries), `replay` (`retrain dlq
replay`), `temporal` (the lazily connected client), `metrics`.
"""
