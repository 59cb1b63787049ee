import json

from distilld.daemon.notifications import (
    NotificationKind,
    Notifier,
    retrain_failed,
    retrain_finished,
    rule_tripped,
)
from distilld.daemon.spool import Spool
from distilld.registry.config import NotificationsConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_slack_and_json_payloads(receiver):
    config = NotificationsConfig(
        slack_webhook_url=receiver.url("/slack"), json_webhook_urls=[receiver.url("/json")]
    )
    notifier = Notifier(config)
    sent = notifier.notify(
        retrain_finished(
            "intent",
            "3",
            "kept",
            "holdout agreement gain +0.0010 is below the required +0.0100",
            {"candidate.holdout.agreement": 0.861},
        )
    )
    assert sent
    [slack] = [json.loads(b) for b in receiver.bodies("/slack")]
    assert "*intent: v3 kept as challenger*" in slack["text"]
    assert "below the required" in slack["text"]
    assert slack["blocks"][1]["fields"][1]["text"] == "*candidate.holdout.agreement*\n0.8610"
    [generic] = [json.loads(b) for b in receiver.bodies("/json")]
    assert generic["kind"] == NotificationKind.RETRAIN_FINISHED.value
    assert generic["fields"]["status"] == "kept"
    assert generic["severity"] == "warning"


def test_dedupe_window(receiver):
    clock = Clock()
    notifier = Notifier(
        NotificationsConfig(json_webhook_urls=[receiver.url("/j")], dedupe_window_s=60), clock=clock
    )
    tripped = rule_tripped("intent", "divergence", "dec-1", {"kl": 0.4})
    assert notifier.notify(tripped)
    clock.now += 30
    assert not notifier.notify(tripped)
    assert notifier.notify(rule_tripped("intent", "input-drift", "dec-2", {}))
    clock.now += 31
    assert notifier.notify(tripped)
    assert len(receiver.bodies("/j")) == 3


def test_rate_limit_counts_suppressed_and_reports_them(receiver):
    clock = Clock()
    notifier = Notifier(
        NotificationsConfig(json_webhook_urls=[receiver.url("/j")], max_per_hour=2), clock=clock
    )
    for i in range(5):
        notifier.notify(retrain_failed("intent", "training", f"OOM {i}", subject=str(i)))
        clock.now += 1
    assert len(receiver.bodies("/j")) == 2
    clock.now += 3600
    assert notifier.notify(retrain_failed("intent", "training", "OOM 5", subject="5"))
    last = json.loads(receiver.bodies("/j")[-1])
    assert last["suppressed_since_last"] == 3


def test_undeliverable_notification_is_spooled_and_delivered_later(receiver, tmp_path):
    spool = Spool(tmp_path / "spool", retry_initial_s=0.01)
    notifier = Notifier(
        NotificationsConfig(json_webhook_urls=[receiver.url("/j")], max_retries=1), spool=spool
    )
    receiver.fail_next = 2
    assert notifier.notify(retrain_failed("intent", "training", "boom"))
    assert receiver.bodies("/j") == []
    [entry] = spool.pending()
    assert entry.kind == "notification"
    result = spool.drain({"notification": notifier.deliver_spooled})
    assert result.done == [entry.id]
    assert json.loads(receiver.bodies("/j")[0])["text"] == "boom"


def test_disabled_notifier_sends_nothing():
    assert not Notifier(NotificationsConfig()).notify(retrain_failed("intent", "training", "boom"))
