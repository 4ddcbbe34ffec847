#!/usr/bin/env python3
"""Draws a results.json of `weir bench` (or bench/run-peers.sh) as a PNG.

    python3 bench/chart.py bench/results/2026-11-22-embedded-1m.json [OUT.png]

One bar per measured rate (records/s, log scale: the raw references and the
peer differ by orders of magnitude), labelled with its figure and its ratio
to its reference (and, where the file has it, its CPU time per input
record); the issue's target ratio is named beside each bar that has one.
Needs matplotlib (`python3 -m pip install matplotlib`).
"""

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Target ratios of issue 6, by the start of a row's name.
TARGETS = {
    "weir inventory, at-least-once": 0.8,
    "weir inventory, exactly-once": 0.6,
    "weir restore from the changelog": 0.8,
    "weir restore from the exactly-once changelog": 0.8,
}


def bars(results):
    """(label, records/s, note, colour) for every rate in the file."""
    out = []
    for row in results["rows"]:
        name, rate, ratio = row["name"], row["rate"], row.get("ratio")
        if name.startswith("weir start"):
            continue  # start-up included: not a rate of the job itself
        target = next((t for k, t in TARGETS.items() if name.startswith(k)), None)
        note = f"{rate:,.0f}/s"
        if ratio is not None:
            note += f"   {ratio:.2f}× reference"
            if target is not None:
                note += f" (target {target}×)"
        if row.get("cpu_us_per_record") is not None:
            note += f"   CPU {row['cpu_us_per_record']:.2f} µs/record"
        colour = "#7f7f7f" if ratio is None else "#1f77b4"
        # Each run's time, listed in the row's name, is for the table only.
        label = re.sub(r"; runs [^)]*", "", name)
        out.append((label, rate, note, colour))
    for peer in results.get("peer", []):
        g = peer["guarantee"]
        procs = peer.get("quix_processes", 1)
        copies = f" ({procs} processes)" if procs > 1 else ""
        out.append(
            (
                f"Quix Streams{copies}, {g}",
                peer["quix_rate"],
                f"{peer['quix_rate']:,.0f}/s   Weir {peer['weir_over_quix']:.1f}× (target 10×)"
                + (
                    f"   CPU {peer['quix_cpu_us_per_record']:.2f} µs/record"
                    if "quix_cpu_us_per_record" in peer
                    else ""
                ),
                "#ff7f0e",
            )
        )
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else src.with_suffix(".png")
    results = json.loads(src.read_text())
    rows = bars(results)
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(rows) + 1.6))
    y = range(len(rows))
    ax.barh(list(y), [r[1] for r in rows], color=[r[3] for r in rows])
    ax.set_xscale("log")
    ax.set_yticks(list(y), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        ax.text(r[1] * 1.05, i, r[2], va="center", fontsize=8)
    top = max(r[1] for r in rows)
    ax.set_xlim(right=top * 12)
    ax.set_xlabel("records/s (log scale); grey: the references the ratios divide by")
    title = (
        f"{results['broker']}\n{results['input_records']:,} input records, "
        f"{results['partitions']} partitions; {results['machine']}"
    )
    memory = results.get("memory", [])
    if len(memory) >= 2 and results.get("memory_growth") is not None:
        # Not a rate: the memory step's figures go in the title.
        first, last = memory[0], memory[-1]
        title += (
            f"\nstore RSS {first['settled_rss_mib']:.0f} → {last['settled_rss_mib']:.0f} MiB, "
            f"{first['keys']:,} → {last['keys']:,} keys: "
            f"{results['memory_growth']:.2f}× (target ≤ 1.3×)"
        )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
