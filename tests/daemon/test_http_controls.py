"""The control endpoints' bearer token: required when configured, never silently open."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from distilld.daemon.http_server import DaemonHttpServer
from distilld.daemon.metrics import DaemonMetrics


def _server(token_env=None):
    calls = []
    server = DaemonHttpServer(
        "127.0.0.1",
        0,
        DaemonMetrics(),
        status=lambda: {"ok": True},
        healthy=lambda: True,
        ready=lambda: False,
        controls={"pause": lambda body: calls.append(body) or {"paused": True}},
        control_token_env=token_env,
    )
    return server.start(), calls


def _post(url, token=None):
    req = urllib.request.Request(url, data=json.dumps({"reason": "x"}).encode(), method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def test_token_required_when_configured(monkeypatch):
    monkeypatch.setenv("TEST_DISTILLD_TOKEN", "s3cret")
    server, calls = _server("TEST_DISTILLD_TOKEN")
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            _post(f"{server.url}/v1/pause")
        assert err.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as err:
            _post(f"{server.url}/v1/pause", token="wrong")
        assert err.value.code == 401
        assert calls == []
        assert _post(f"{server.url}/v1/pause", token="s3cret") == 200
        assert calls == [{"reason": "x"}]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}/readyz", timeout=5)
        assert err.value.code == 503
    finally:
        server.stop()


def test_an_empty_token_variable_is_a_start_up_error(monkeypatch):
    monkeypatch.setenv("TEST_DISTILLD_TOKEN", "")
    with pytest.raises(ValueError, match="TEST_DISTILLD_TOKEN"):
        _server("TEST_DISTILLD_TOKEN")


def test_distilld_run_refuses_to_start_with_an_empty_token(tmp_path):
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "http": {"port": 0, "control_token_env": "TEST_DISTILLD_TOKEN"},
                "state": {"state_dir": str(tmp_path)},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "distilld.daemon", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TEST_DISTILLD_TOKEN": ""},
    )
    assert result.returncode == 2
    assert "TEST_DISTILLD_TOKEN" in result.stderr and "Traceback" not in result.stderr
