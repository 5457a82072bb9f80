"""`monitor-sim generate`: config + scenario + seed → trace (SPEC 7)."""

from __future__ import annotations

from monitor_sim.expect import expectations
from monitor_sim.scenarios import SCENARIOS
from monitor_sim.scenarios.base import Ctx, Options
from monitor_sim.simconfig import SimConfig
from monitor_sim.trace import Trace
from monitor_sim.wire import MALFORMED


def generate(config: SimConfig, scenario: str, seed: int, options: Options | None = None) -> Trace:
    try:
        build = SCENARIOS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}") from None
    ctx = Ctx(config, seed, options or Options())
    end = build(ctx)
    # Stable sort: records made at the same instant keep their making order.
    records = sorted(ctx.records, key=lambda r: r.at)
    end = max(end, max((r.at for r in records), default=0.0))
    expect = expectations(config, ctx.start, records, end)
    expect["quarantine"] = sorted(
        [r.channel, MALFORMED[r.malformed][1]] for r in records if r.malformed
    )
    return Trace(ctx.start, records, scenario=scenario, seed=seed, end=end, expect=expect)
