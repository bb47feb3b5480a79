"""deploy/prometheus: promtool accepts the config and the rules, and the rules' unit tests
(rules.test.yml) pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.helpers import DEPLOY, ROOT, run, tool

PROMETHEUS = DEPLOY / "prometheus"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_promtool_accepts_the_config() -> None:
    result = run([tool("promtool"), "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = run([tool("promtool"), "check", "rules", "rules.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", "rules.test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """promtool does check expressions: a rule with a PromQL error fails."""
    broken = tmp_path / "rules.yml"
    broken.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum by (model (latentq_workers)\n"
    )
    result = run([tool("promtool"), "check", "rules", str(broken)])
    assert result.returncode != 0


def alerts() -> dict[str, dict[str, Any]]:
    groups = load(PROMETHEUS / "rules.yml")["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_the_alerts_cover_queues_workers_errors_and_ooms() -> None:
    exprs = {name: " ".join(rule["expr"].split()) for name, rule in alerts().items()}
    wanted = {
        "queue backing up": "latentq_queue_depth",
        "no worker for a model": "latentq_workers) == 0",
        "API 5xx rate": 'latentq_http_requests_total{status=~"5.."}',
        "out of memory": 'code="out_of_memory"',
    }
    for what, fragment in wanted.items():
        assert any(fragment in e for e in exprs.values()), f"no alert on {what} ({fragment})"
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
    tested = {
        t["alertname"]
        for case in load(PROMETHEUS / "rules.test.yml")["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested == set(alerts()), "every alert has a unit test in rules.test.yml"


def test_scrapes_match_the_compose_services() -> None:
    """The API replicas on :8000 and the workers on :9100, by their compose service names."""
    jobs = {j["job_name"]: j for j in load(PROMETHEUS / "prometheus.yml")["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for job, service, port in (("latentq-api", "api", 8000), ("latentq-worker", "worker", 9100)):
        (sd,) = jobs[job]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["port"] == port, job
        assert str(port) in compose[service]["expose"]
    # The rules and the scrape jobs agree on the job names.
    assert any('job=~"latentq-.*"' in r["expr"] for r in alerts().values())
