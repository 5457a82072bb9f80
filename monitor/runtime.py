"""What the daemon's parts share at run time (one object, passed around)."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from monitor.clock import Clock, make_clock
from monitor.events import EventBus
from monitor.metrics import Metrics
from monitor.model import Config
from monitor.pipeline import Pipeline
from monitor.store import Store


class ConfigHolder:
    """The current config snapshot; SIGHUP swaps it in one assignment."""

    def __init__(self, config: Config) -> None:
        self.current = config

    def __call__(self) -> Config:
        return self.current


@dataclass
class Runtime:
    config: ConfigHolder
    store: Store
    clock: Clock
    metrics: Metrics
    bus: EventBus
    pipeline: Pipeline
    # Every configured listener by name (`smtp`, `mqtt`, `serial:/dev/ttyS0`)
    # and whether it is up now; `/readyz` reports the ones that are not.
    listeners: dict[str, bool] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.current.daemon.timezone)

    def set_listener(self, name: str, up: bool) -> None:
        self.listeners[name] = up
        self.metrics.listener_up.labels(listener=name).set(1 if up else 0)

    def down(self) -> list[str]:
        out = [] if self.store.up else ["store"]
        out.extend(name for name, up in sorted(self.listeners.items()) if not up)
        return out


def make_runtime(config: Config, store: Store, bus: EventBus) -> Runtime:
    """The clock, metrics and pipeline around an opened store, as the daemon
    (and `monitor retire`) run them."""
    clock = make_clock(config.daemon.clock, config.daemon.clock_start)
    metrics = Metrics()
    holder = ConfigHolder(config)
    pipeline = Pipeline(store, clock, metrics, bus, holder)
    return Runtime(holder, store, clock, metrics, bus, pipeline)
