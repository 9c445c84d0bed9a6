"""The Python client library: reach coordinators, loops, rollouts, drift monitors, schedules and
the training limit through Temporal. Importable by users, the CLI, the gateway and activities."""
