"""Metric names: the Grafana dashboard and the alert rules query only metrics that exist,
and deploy/README.md's metric table matches the code (app/ and worker/)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    DEPLOY,
    METRIC,
    ROOT,
    base_metric,
    code_metric_names,
    readme_metrics,
)

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "latentq.json"
RULES = DEPLOY / "prometheus" / "rules.yml"


def exprs(node: Any) -> list[str]:
    """Every PromQL expression in a Grafana dashboard: targets' `expr`, variables' queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            elif key == "query" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(exprs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(exprs(item))
    return found


def dashboard() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return parsed


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def known_names() -> set[str]:
    """Metric names that exist: in the code, or in deploy/README.md's table (the worker's
    are being added to the code; the table is their contract)."""
    return code_metric_names() | set(readme_metrics())


def queried(expressions: list[str]) -> set[str]:
    known = known_names()
    return {base_metric(name, known) for e in expressions for name in METRIC.findall(e)}


# ---- the README's table --------------------------------------------------------------------


def test_the_readme_table_lists_the_metrics() -> None:
    table = readme_metrics()
    assert len(table) >= 13, "deploy/README.md has the metric table"
    for name, (kind, labels) in table.items():
        assert kind in ("counter", "gauge", "histogram"), name
        assert (kind == "counter") == name.endswith("_total"), name
        assert len(set(labels)) == len(labels), name


def test_every_metric_of_the_code_is_in_the_readme_table() -> None:
    missing = code_metric_names() - set(readme_metrics())
    assert not missing, f"add these metrics to deploy/README.md's table: {sorted(missing)}"


@pytest.mark.parametrize("module", ["app.metrics", "worker.metrics"])
def test_the_readme_table_matches_the_registries(module: str) -> None:
    """Type and labels of every metric a process registers, from its prometheus_client
    registry (importing either module loads neither torch nor fastapi's app)."""
    try:
        registry = importlib.import_module(module).REGISTRY
    except ModuleNotFoundError:
        pytest.fail(f"{module} has no metric registry")
    table = readme_metrics()
    collectors = list(registry._collector_to_names)
    assert collectors, f"{module} registers metrics"
    for collector in collectors:
        kind = collector._type
        name = collector._name + ("_total" if kind == "counter" else "")
        assert name in table, f"{name} ({module}) is not in deploy/README.md's table"
        assert table[name][0] == kind, f"type of {name}"
        assert tuple(collector._labelnames) == table[name][1], f"labels of {name}"


def test_every_metric_of_the_readme_table_is_in_the_code() -> None:
    missing = set(readme_metrics()) - code_metric_names()
    assert not missing, f"in deploy/README.md but in no app/ or worker/ code: {sorted(missing)}"


# ---- what the dashboard and the rules query ------------------------------------------------


def test_the_dashboard_queries_only_known_metrics() -> None:
    names = queried(exprs(dashboard()))
    unknown = names - known_names()
    assert not unknown, f"the dashboard queries metrics that do not exist: {sorted(unknown)}"
    missing = set(readme_metrics()) - names
    assert not missing, f"the dashboard shows no panel of {sorted(missing)}"


def test_the_rules_query_only_known_metrics() -> None:
    names = queried(rule_exprs())
    assert names, "the rules query latentq metrics"
    unknown = names - known_names()
    assert not unknown, f"the alert rules query metrics that do not exist: {sorted(unknown)}"


def test_histograms_are_queried_through_their_series() -> None:
    """A histogram is queried as _bucket/_sum/_count, never by its bare name, and only
    histograms have those series."""
    table = readme_metrics()
    for expression in exprs(dashboard()) + rule_exprs():
        for name in METRIC.findall(expression):
            base = base_metric(name, set(table))
            if base != name:
                assert table[base][0] == "histogram", f"{name} in {expression}"
            elif base in table:
                assert table[base][0] != "histogram", f"bare histogram {name} in {expression}"


# ---- the dashboard itself ------------------------------------------------------------------


def test_the_dashboard_is_provisionable() -> None:
    board = dashboard()
    assert board["uid"] == "latentq" and board["title"]
    assert board.get("id") is None, "provisioned dashboards carry no database id"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), f"{panel['title']} queries a latentq metric"
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "latentq.yml").read_text()
    )
    (entry,) = provider["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in grafana_volumes if ":" in v}
    assert Path(mounted[entry["options"]["path"]]) == Path("./deploy/grafana/dashboards")
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert re.fullmatch(r"http://prometheus:9090/?", source["url"])
