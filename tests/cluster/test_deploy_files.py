"""The deployment files in deploy/ are checked here as far as this machine can (no Docker engine, no Kubernetes):
their voicecall configurations load, HAProxy accepts its configuration, the manifests are the kinds the docs
promise, and every metric the Grafana dashboard plots is one a real server exports on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from voicecall.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ENV = {"VOICECALL_SECRET_KEY": "k"}


def test_the_compose_and_kubernetes_configurations_load() -> None:
    load_config(DEPLOY / "voicecall.yaml", env=ENV)
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "voicecall.yaml").read_text()))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret"} <= kinds
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    path = DEPLOY / ".k8s-config-check.yaml"
    try:
        path.write_text(config_map["data"]["voicecall.yaml"])
        load_config(path, env=ENV)
    finally:
        path.unlink(missing_ok=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > load_config(DEPLOY / "voicecall.yaml", env=ENV).server.drain_seconds  # drain ends before SIGKILL
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"voicecall-1", "voicecall-2", "voicecall-3", "haproxy", "redis", "postgres", "llm"} <= set(compose["services"])


def test_haproxy_accepts_its_configuration() -> None:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(exe).exists():
        pytest.skip("haproxy is not installed")
    out = subprocess.run([exe, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_the_dashboard_plots_metrics_the_server_exports(make_server: Any) -> None:
    srv = make_server(**{"plugins.voice-call.provider": "openai-realtime",
                         "plugins.voice-call.openaiRealtime.apiKey": "sk-unused"})
    text = httpx.get(f"http://127.0.0.1:{srv.config.server.port}/metrics", timeout=10).text
    exported = {m.group(1) for m in re.finditer(r"^# TYPE (\w+) ", text, re.MULTILINE)}
    exported |= {name + suffix for name in exported for suffix in ("_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((DEPLOY / "grafana" / "voicecall.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bvoicecall_\w+", target["expr"])}
    assert used and used <= exported, used - exported
