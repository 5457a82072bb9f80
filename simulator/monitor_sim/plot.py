"""`load --plot FILE.png`: throughput and ingest latency over the run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from monitor_sim.load import LoadResult, Sample, percentile


def series(samples: list[Sample]) -> dict[str, list[float]]:
    """Per second since the first send: acknowledged/s, stored/s, latency p50/p99."""
    if not samples:
        return {"t": [], "acked": [], "stored": [], "p50": [], "p99": []}
    t0 = min(s.sent for s in samples)
    acked: defaultdict[int, int] = defaultdict(int)
    stored: defaultdict[int, int] = defaultdict(int)
    lat: defaultdict[int, list[float]] = defaultdict(list)
    for s in samples:
        if s.acked is not None:
            acked[int(s.acked - t0)] += 1
        if s.stored is not None:
            stored[int(s.stored - t0)] += 1
            lat[int(s.sent - t0)].append((s.stored - s.sent) * 1000)
    last = max([*acked, *stored, *lat, 0])
    t = list(range(last + 1))
    p50 = [percentile(sorted(lat[i]), 0.5) if lat[i] else float("nan") for i in t]
    p99 = [percentile(sorted(lat[i]), 0.99) if lat[i] else float("nan") for i in t]
    return {
        "t": [float(i) for i in t],
        "acked": [float(acked[i]) for i in t],
        "stored": [float(stored[i]) for i in t],
        "p50": p50,
        "p99": p99,
    }


def plot(result: LoadResult, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    data = series(result.samples)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(data["t"], data["acked"], label="acknowledged/s")
    top.plot(data["t"], data["stored"], label="stored/s", linestyle="--")
    top.set_ylabel("reports per second")
    top.legend(loc="lower right")
    top.set_title(title)
    bottom.plot(data["t"], data["p50"], label="p50")
    bottom.plot(data["t"], data["p99"], label="p99")
    bottom.set_ylabel("sent → stored (ms)")
    bottom.set_xlabel("seconds since the first report")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
