"""The private-broker test helper works: QoS 1 delivery, persistence across a
graceful restart, loss across a crash, the fixtures, and the port helpers."""

from __future__ import annotations

import queue
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.support import mosquitto as support
from tests.support.mosquitto import Mosquitto, MosquittoError, find_mosquitto
from tests.support.ports import free_port, port_is_open, wait_port

# Re-exported under this module so pytest finds them (an import of the names
# would trip ruff's F811 on the parameters that use them).
mosquitto_broker = support.mosquitto_broker
mosquitto_factory = support.mosquitto_factory

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

TIMEOUT = 10.0


class Client:
    """A small blocking wrapper over paho 2.x for these tests."""

    def __init__(
        self,
        broker: Mosquitto,
        client_id: str | None = None,
        *,
        clean_session: bool = True,
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.session_present: bool | None = None
        self.connect_rc: ReasonCode | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT), "no CONNACK"
        assert self.connect_rc is not None and not self.connect_rc.is_failure, self.connect_rc

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self.connect_rc = rc
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self._subscribed.wait(TIMEOUT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)  # QoS 1: returns once PUBACK arrived
        assert info.is_published()

    def get(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(broker: Mosquitto, client_id: str | None = None, **kw: Any) -> Client:
        c = Client(broker, client_id, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_qos1_publish_subscribe(
    mosquitto_broker: Mosquitto, clients: Callable[..., Client]
) -> None:
    assert mosquitto_broker.url == f"mqtt://127.0.0.1:{mosquitto_broker.port}"
    assert mosquitto_broker.running
    sub = clients(mosquitto_broker)
    sub.subscribe("express/alarm/+")
    pub = clients(mosquitto_broker)
    pub.publish("express/alarm/JPN0012345", b'{"v":1}', qos=1)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == ("express/alarm/JPN0012345", b'{"v":1}', 1)


def test_graceful_restart_keeps_retained_and_queued(
    mosquitto_broker: Mosquitto, clients: Callable[..., Client]
) -> None:
    broker = mosquitto_broker
    # A persistent session subscribes, then goes away.
    daemon = Client(broker, "daemon-1", clean_session=False)
    daemon.subscribe("express/alarm/#", qos=1)
    daemon.close()

    pub = clients(broker)
    pub.publish("express/status/JPN1", b"online", qos=1, retain=True)
    pub.publish("express/alarm/JPN1", b"while-offline", qos=1)
    pub.close()

    port = broker.port
    broker.restart()  # SIGTERM: mosquitto saves its database on the way out
    assert broker.port == port
    assert broker.persistence_file.exists()

    # The queued QoS 1 message waits for the persistent session...
    daemon = clients(broker, "daemon-1", clean_session=False)
    assert daemon.session_present is True
    assert daemon.get().payload == b"while-offline"
    # ...and the retained one for any new subscriber.
    late = clients(broker)
    late.subscribe("express/status/+")
    msg = late.get()
    assert (msg.payload, msg.retain) == (b"online", True)


def test_kill_loses_unsaved_state_and_restarts_on_same_port(
    mosquitto_broker: Mosquitto, clients: Callable[..., Client]
) -> None:
    broker = mosquitto_broker
    pub = clients(broker)
    pub.publish("express/status/JPN2", b"online", qos=1, retain=True)
    pub.close()

    broker.kill()  # autosave_interval 0: nothing was saved
    assert not broker.running
    assert not port_is_open(broker.host, broker.port)
    broker.start()

    late = clients(broker)
    late.subscribe("express/status/+")
    with pytest.raises(queue.Empty):
        late.messages.get(timeout=0.5)


def test_generated_config_and_log(mosquitto_broker: Mosquitto) -> None:
    conf = mosquitto_broker.config_path.read_text().splitlines()
    port = mosquitto_broker.port
    for line in (
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {mosquitto_broker.data_dir}/",
        "max_queued_messages 100000",
    ):
        assert line in conf
    assert "running" in mosquitto_broker.log_text()


def test_factory_options_and_pause(
    mosquitto_factory: Callable[..., Mosquitto], clients: Callable[..., Client]
) -> None:
    a = mosquitto_factory(max_queued_messages=10)
    b = mosquitto_factory(start=False)
    assert "max_queued_messages 10" in a.config_text()
    assert not b.running
    b.start()
    assert a.port != b.port

    a.pause()
    with socket.create_connection((a.host, a.port), timeout=1):
        pass  # the kernel still accepts while the broker is stopped
    a.resume()
    c = clients(a)
    c.publish("x", b"y")


def test_stop_is_idempotent_and_context_manager(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "b") as broker:
        assert port_is_open(broker.host, broker.port)
    assert not broker.running
    broker.stop()
    broker.kill()


def test_start_failure_reports_log(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "bad", extra_config=["no_such_option 1"])
    with pytest.raises(MosquittoError, match="no_such_option"):
        broker.start(timeout=5)
    assert not broker.running


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "b", binary=str(tmp_path / "nope"))
    with pytest.raises((MosquittoError, OSError)):
        broker.start()


def test_ports_helpers() -> None:
    port = free_port()
    assert not port_is_open("127.0.0.1", port)
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, timeout=0.2)
    with pytest.raises(RuntimeError):
        wait_port("127.0.0.1", port, timeout=5, alive=lambda: False)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        wait_port("127.0.0.1", port, timeout=2)


def test_deep_queue_for_offline_session(
    mosquitto_broker: Mosquitto, clients: Callable[..., Client]
) -> None:
    # mosquitto's default max_queued_messages (1000) silently drops the rest
    # of a burst to an absent persistent subscriber; the test broker must not.
    n = 1500
    daemon = Client(mosquitto_broker, "daemon-burst", clean_session=False)
    daemon.subscribe("express/alarm/#", qos=1)
    daemon.close()
    pub = clients(mosquitto_broker)
    infos = [pub.client.publish("express/alarm/JPN3", b"%d" % i, qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(TIMEOUT)
    daemon = clients(mosquitto_broker, "daemon-burst", clean_session=False)
    got = sorted(int(daemon.get().payload) for _ in range(n))
    assert got == list(range(n))
