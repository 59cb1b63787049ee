"""The ``distilld`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from distilld import __version__
from distilld.daemon.config import ConfigError, json_schema, load_config


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
    try:
        daemon = Daemon(config)
    except ValueError as err:  # settings that only the environment can complete (e.g. a control token)
        print(f"cannot start: {err}", file=sys.stderr)
        return 2
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
    import os

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if token_env and os.environ.get(token_env):
        req.add_header("Authorization", f"Bearer {os.environ[token_env]}")
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
    for ref, info in doc.get("references", {}).items():
        if info["state"] == "building":
            print(f"reference {ref}: building, {info['records']}/{info['needed']} records")
    from distilld.daemon.policy_engine import format_status

    print(format_status(doc["policy"]))
    retrains = doc.get("retrains", {})
    for job in retrains.get("jobs", []):
        progress = job.get("progress") or {}
        print(f"training {job['job_id']}: {progress.get('phase', 'starting')}")
    if retrains.get("pending_registrations"):
        print(f"spooled registrations waiting for the registry: {retrains['pending_registrations']}")
    for e in consumer["last_errors"][-5:]:
        print(f"error {e['kind']}: {e['detail']}")
    return 0


def _control(args, name: str, body: dict) -> int:
    config = _load(args.config) if args.config else None
    token_env = config.http.control_token_env if config else None
    doc = _http(f"{_daemon_url(args)}/v1/{name}", body, token_env)
    for decision in doc.get("decisions", []):
        print(f"#{decision.get('id')} {decision.get('kind')}: {decision.get('reason')}")
    return 0


def cmd_retrain(args) -> int:
    return _control(args, "retrain", {"model": args.model, "reason": args.reason, "force": args.force})


def cmd_pause(args) -> int:
    return _control(args, "pause", {"reason": args.reason})


def cmd_resume(args) -> int:
    return _control(args, "resume", {})


def cmd_decisions(args) -> int:
    from distilld.daemon.decision_record import DecisionJournal, format_decision
    from distilld.daemon.service import STATE_DB
    from distilld.daemon.state_store import StateStore

    config = _load(args.config)
    store = StateStore(config.state.state_dir / STATE_DB)
    try:
        records = DecisionJournal(store).recent(model=args.model, limit=args.limit)
    finally:
        store.close()
    if args.id is not None:
        match = [r for r in records if r.id == args.id]
        if not match:
            raise SystemExit(f"decision #{args.id} is not among the last {args.limit}")
        print(json.dumps(match[0].to_dict(), indent=2, default=str))
        return 0
    for r in records:
        print(format_decision(r))
    return 0


def cmd_report(args) -> int:
    from distilld.daemon.drift_monitor import DriftMonitor
    from distilld.daemon.service import STATE_DB
    from distilld.daemon.state_store import StateStore
    from distilld.daemon.windows import META_NS, STATE_NS
    from distilld.detectors.evidently_report import build_evidently_report

    config = _load(args.config)
    store = StateStore(config.state.state_dir / STATE_DB)
    try:
        metas = [m for m in store.items_json(META_NS).values() if m["model"] == args.model]
        if args.version:
            metas = [m for m in metas if m["version"] == args.version]
        if not metas:
            raise SystemExit(f"no open window for model {args.model!r}; is the daemon consuming it?")
        meta = max(metas, key=lambda m: m["window_id"])
        monitor = DriftMonitor(config.detectors, store, None)
        reference = monitor.reference(meta["model"], meta["version"], meta["n_classes"])
        if reference is None:
            raise SystemExit(
                f"{args.model}/{meta['version']} has no reference yet (still collecting records)"
            )
        blob = store.get_blob(STATE_NS, f"{meta['model']}\x1f{meta['version']}")
        current = monitor.suite(meta["n_classes"]).load_window(blob)
    finally:
        store.close()
    out = args.out or (
        config.state.state_dir / "reports" / f"{args.model}-{meta['version']}-w{meta['window_id']}"
    )
    summary = build_evidently_report(reference.window, current, out)
    print(json.dumps(summary, indent=2, default=str))
    print(f"report: {out / 'report.html'}")
    return 0


TIMELINE_KINDS = ("rule_tripped", "retrain_started", "retrain_finished", "retrain_blocked", "rule_rearmed")


def cmd_timeline(args) -> int:
    from distilld.daemon.decision_record import DecisionJournal
    from distilld.daemon.drift_monitor import SCORED_KIND
    from distilld.daemon.service import STATE_DB
    from distilld.daemon.state_store import StateStore
    from distilld.daemon.timeline_plot import plot_timeline

    config = _load(args.config)
    store = StateStore(config.state.state_dir / STATE_DB)
    try:
        scored = store.journal(SCORED_KIND, model=args.model, limit=args.windows)
        decisions = DecisionJournal(store).recent(model=args.model, limit=10_000)
    finally:
        store.close()
    if not scored:
        raise SystemExit(f"no scored windows for {args.model!r} in {config.state.state_dir}")
    t0 = scored[0]["ts"]
    events = [
        (d.ts, f"{d.kind}: {d.rule or ''}") for d in decisions if d.kind in TIMELINE_KINDS and d.ts >= t0
    ]
    out = args.out or (config.state.state_dir / "reports" / f"timeline-{args.model}.png")
    plot_timeline(scored, events, t0, out, "seconds since the first window shown")
    print(f"picture: {out}")
    return 0


def _registry_command(args, fn_name: str, *fn_args) -> int:
    from distilld.daemon import promotion

    config = _load(args.config)
    return getattr(promotion, fn_name)(config, *fn_args)


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

    def daemon_target(p):
        p.add_argument("-c", "--config", type=Path, default=None)
        p.add_argument(
            "--url", default=None, help="daemon base URL (default: from the config's http section)"
        )

    p = sub.add_parser("retrain", help="ask the running daemon to re-distil a model (subject to budget)")
    daemon_target(p)
    p.add_argument("--model", required=True)
    p.add_argument("--reason", required=True, help="why; recorded in the decision record")
    p.add_argument("--force", action="store_true", help="ignore cooldown, budget and maintenance windows")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("pause", help="no retrains start while paused; detection continues")
    daemon_target(p)
    p.add_argument("--reason", default="operator")
    p.set_defaults(func=cmd_pause)

    p = sub.add_parser("resume", help="undo pause")
    daemon_target(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("decisions", help="recent decision records (why did it retrain?)")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--id", type=int, default=None, help="print this decision record in full (JSON)")
    p.set_defaults(func=cmd_decisions)

    p = sub.add_parser("report", help="Evidently drift report: reference vs the model's current window")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version", default=None)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <state_dir>/reports/...)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("timeline", help="picture of detector scores over time with trips and retrains")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--windows", type=int, default=500, help="how many recent windows")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(func=cmd_timeline)

    from distilld.daemon.replay import build_parser as replay_parser
    from distilld.daemon.replay import replay_command

    p = replay_parser(
        sub.add_parser("replay", help="replay history through detectors and rules (no training)")
    )
    p.set_defaults(func=replay_command)

    p = sub.add_parser("register-base", help="register an existing student folder as the first champion")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("path", type=Path, help="Hugging Face model folder")
    p.set_defaults(func=lambda a: _registry_command(a, "register_base_main", a.model, a.path))

    p = sub.add_parser("promote", help="promote a registered version to champion (manual approval)")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True)
    p.set_defaults(func=lambda a: _registry_command(a, "promote_main", a.model, a.version))

    p = sub.add_parser("rollback", help="move champion back to the previous champion and signal serving")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.set_defaults(func=lambda a: _registry_command(a, "rollback_main", a.model))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
