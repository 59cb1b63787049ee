"""The ``distilld`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from distilld.daemon.config import ConfigError, json_schema, load_config

from distilld import __version__


def _load(path: Path | None):
    try:
        return load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args) -> int:
    from distilld.daemon.logging_setup import configure_logging
    from distilld.daemon.service import Daemon

    config = _load(args.config)
    configure_logging(config.logging.format, config.logging.level, config.logging.log_input_text)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    daemon.run()
    return 0


def cmd_check(args) -> int:
    config = _load(args.config)
    print(f"{args.config}: ok ({len(config.kafka.topics)} topic(s), state dir {config.state.state_dir})")
    return 0


def cmd_config(args) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
    else:
        config = _load(args.config)
        print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0


def _daemon_url(args) -> str:
    if args.url:
        return args.url.rstrip("/")
    config = _load(args.config)
    return f"http://{config.http.host}:{config.http.port}"


def _http(url: str, body: dict | None = None, token_env: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        raise SystemExit(f"{url}: HTTP {err.code}: {detail}") from None
    except urllib.error.URLError as err:
        raise SystemExit(f"cannot reach the daemon at {url}: {err.reason} (is `distilld run` up?)") from None


def cmd_status(args) -> int:
    doc = _http(_daemon_url(args) + "/status")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    consumer = doc["consumer"]
    rec = consumer["records"]
    print(f"distilld {doc['version']}  up {doc['uptime_s']:.0f}s  ready={consumer['ready']}")
    print(
        f"records: consumed {rec['consumed']}  valid {rec['valid']}  dead-lettered {rec['dead_lettered']}"
        f"  replay-skipped {rec['replay_skipped']}"
    )
    print(f"partitions: {', '.join(consumer['assigned']) or '-'}   lag: {sum(consumer['lag'].values())}")
    for w in doc["windows"]:
        print(
            f"window {w['model']}/{w['version']} #{w['window_id']}: {w['n_records']}/{w['window_records']} records"
            f" (total {w['total_records']})"
        )
    for e in consumer["last_errors"][-5:]:
        print(f"error {e['kind']}: {e['detail']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distilld", description="Continuous distillation daemon.")
    parser.add_argument("--version", action="version", version=f"distilld {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config file; names each bad field and why")
    p.add_argument("config", type=Path)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", help="print the config JSON Schema, or a config with defaults filled in")
    p.add_argument("--schema", action="store_true", help="print the JSON Schema of the config")
    p.add_argument("-c", "--config", type=Path, default=None)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("status", help="show a running daemon's status")
    p.add_argument("-c", "--config", type=Path, default=None)
    p.add_argument("--url", default=None, help="daemon base URL (default: from the config's http section)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
