"""docs/performance.png from bench reports: throughput and latency against offered load, before and after.

python -m bench.plot bench/results/BEFORE.json bench/results/AFTER.json [-o docs/performance.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(reports: list[Path], out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for path in reports:
        report = json.loads(path.read_text())
        label = report.get("label") or path.stem
        raw = report["raw"]["mean"]
        points = report.get("b_latency", {}).get("points", [])
        offered = [p["offered"] for p in points]
        left.plot(offered, [p["achieved"] / raw for p in points], marker="o", label=f"{label}: achieved / raw")
        if "a_throughput" in report:
            left.axhline(report["a_throughput"]["ratio"], linestyle="--", alpha=0.6, label=f"{label}: (a) saturated")
        right.plot(offered, [p["p50_ms"] for p in points], marker="o", label=f"{label}: p50")
        right.plot(offered, [p["p99_ms"] for p in points], marker="s", label=f"{label}: p99")
    left.axhline(0.5, color="grey", linewidth=0.8, label="target (a) 0.5 x raw")
    left.set(xscale="log", xlabel="offered load (events/s, 1 subscription)", ylabel="deliveries/s ÷ raw limit")
    left.set_title("Throughput against offered load")
    left.legend(fontsize=8)
    right.axhline(50, color="grey", linewidth=0.8, label="target p99 50 ms")
    right.set(xscale="log", yscale="log", xlabel="offered load (events/s)", ylabel="commit → receipt (ms)")
    right.set_title("Latency against offered load")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plot")
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/performance.png"))
    args = parser.parse_args()
    plot(args.reports, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
