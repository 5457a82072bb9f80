"""A SIGHUP reload names the changes it cannot apply (listen addresses, the
store, the MQTT session, serial ports) instead of pretending they are in
force: `restart_only_changes` and the `monitor_config_restart_pending` gauge."""

from __future__ import annotations

from pathlib import Path

from monitor.config import load_config
from monitor.config.restart import restart_only_changes
from tests.support.daemon import running, write_config
from tests.support.ports import free_port
from tests.test_mqtt_helpers import mqtt_section
from tests.test_smtp_helpers import smtp_extra


def _pair(tmp_path: Path, before: str, after: str) -> list[str]:
    a = load_config(str(write_config(tmp_path, extra=before, name="a.toml", http_port=9400)))
    b = load_config(str(write_config(tmp_path, extra=after, name="b.toml", http_port=9400)))
    return restart_only_changes(a, b)


def test_live_changes_need_no_restart(tmp_path: Path) -> None:
    smtp = smtp_extra(2600)
    mqtt = mqtt_section("mqtt://127.0.0.1:1999")
    base = smtp + mqtt
    assert _pair(tmp_path, base, base) == []
    # SMTP accept list and limits, and the MQTT offline grace, apply at once
    live = smtp_extra(2600, max_sessions=7).replace("Second@", "Third@") + mqtt.replace(
        "protocol = 5", 'protocol = 5\noffline_grace = "60s"'
    )
    assert _pair(tmp_path, base, live) == []


def test_bound_at_start_changes_are_named(tmp_path: Path) -> None:
    base = smtp_extra(2600) + mqtt_section("mqtt://127.0.0.1:1999")
    moved = smtp_extra(2601) + mqtt_section(
        "mqtt://127.0.0.1:1999", client_id="monitor-9", share_group="g"
    )
    assert _pair(tmp_path, base, moved) == [
        "smtp.listen",
        "mqtt.client_id",
        "mqtt.share_group",
    ]
    # a section added or dropped: the listener exists only from start
    assert _pair(tmp_path, base, mqtt_section("mqtt://127.0.0.1:1999")) == ["smtp"]
    a = load_config(str(write_config(tmp_path, name="c.toml", http_port=9400)))
    b = load_config(str(write_config(tmp_path, name="d.toml", http_port=9401)))
    assert restart_only_changes(a, b) == ["http.listen"]


async def test_reload_sets_the_gauge_until_the_file_matches_again(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    original = cfg.read_text()
    async with running(cfg) as d:
        assert await d.metric("monitor_config_restart_pending") == 0
        cfg.write_text(original.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
        assert await d.daemon.reload()
        assert await d.metric("monitor_config_restart_pending") == 1
        cfg.write_text(original)
        assert await d.daemon.reload()
        assert await d.metric("monitor_config_restart_pending") == 0
