"""Share paho's read-only MQTT 5 property tables between packets.

paho 2.x's `Properties.__init__` rebuilds its name and property tables (two
dicts of ~30 entries and a list) for every packet; with MQTT 5 the daemon
makes two per alarm (decoding the PUBLISH, building our manual PUBACK). That
was 31 % of the daemon's CPU in a `protocol = 5` run (bench/analysis.md);
sharing one set took it from ~5,500 to ~8,400 alarms/s.  The tables do not
depend on the packet type and paho never mutates them, so one set is safe.
The patch is applied only when a freshly built `Properties` has exactly the
attributes this relies on, so a paho release that changes them is left alone.
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_SHARED = ("types", "names", "properties")


def install() -> bool:
    """Patch `Properties.__init__`; True when patched (idempotent)."""
    if getattr(Properties.__init__, "_monitor_shared", False):
        return True
    sample = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if set(vars(sample)) != {"packetType", *_SHARED}:
        return False
    tables = {name: getattr(sample, name) for name in _SHARED}

    def init_shared(self: Properties, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        for name, value in tables.items():
            object.__setattr__(self, name, value)

    init: Any = init_shared
    init._monitor_shared = True
    Properties.__init__ = init  # type: ignore[method-assign]
    return True
