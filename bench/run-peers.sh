#!/usr/bin/env bash
# Weir and its peer, side by side on one broker: nisshi 0.7.0 (durable,
# transactional, Admin API), the one broker here both can run on (Quix
# Streams cannot run on the embedded broker: it creates its changelog topics
# through the Admin API).
#
#   bash bench/run-peers.sh [ORDERS]        (default 50,000 orders)
#
# Runs `weir bench --brokers nisshi` (raw pipe, Weir at-least-once and
# exactly-once, restore), then bench/peers/quix_inventory.py in both modes on
# the same input topic, and writes bench/results/<date>-nisshi.{md,json}
# with the Weir / Quix ratios. Installs what it needs (nisshi through
# scripts/nisshi.sh, quixstreams from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS="${1:-50000}"
source scripts/env.sh
bash scripts/setup.sh >/dev/null
NISSHI="${WEIR_NISSHI:-$(bash scripts/nisshi.sh)}"
python3 -c "import quixstreams" 2>/dev/null || python3 -m pip install -q quixstreams
cargo build --release --workspace --all-targets
WEIR="$CARGO_TARGET_DIR/release/weir"
[ -x "$WEIR" ] || WEIR=target/release/weir

WORK="$(mktemp -d)"
trap 'kill "${BROKER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$WORK/nisshi"
(cd "$WORK/nisshi" && exec "$NISSHI" broker --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine sqlite://nisshi.db \
  --group-initial-rebalance-delay 0s --silent) >/dev/null 2>&1 &
BROKER=$!
B="127.0.0.1:$PORT"
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# Quix Streams reads the source topic's retention.ms back: set it.
"$WEIR" topics create --brokers "$B" --topic bench-in:8 --retention-ms 604800000
"$WEIR" bench --brokers "$B" --orders "$ORDERS" --partitions 8 \
  --steps raw,alo,eos,restore --out "$WORK/weir"
N="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['input_records'])" "$WORK/weir/results.json")"
for g in at-least-once exactly-once; do
  echo "  … quixstreams, $g"
  python3 bench/peers/quix_inventory.py --brokers "$B" --guarantee "$g" \
    --expect "$N" --out "$WORK/quix-$g.json" 2> >(grep -v -i deprecat >&2)
done

OUT="bench/results/$(date +%F)-nisshi"
python3 - "$WORK" "$OUT" <<'PY'
import json, sys
work, out = sys.argv[1], sys.argv[2]
weir = json.load(open(f"{work}/weir/results.json"))
quix = {g: json.load(open(f"{work}/quix-{g}.json")) for g in ["at-least-once", "exactly-once"]}
rate = {r["name"]: r["rate"] for r in weir["rows"]}
peer = []
for g in quix:
    w = rate[f"weir inventory, {g}"]
    q = quix[g]["rate"]
    peer.append({"guarantee": g, "weir_rate": w, "quix_rate": q, "weir_over_quix": w / q})
weir["peer"] = peer
weir["broker"] = "nisshi 0.7.0 (sqlite storage, a separate process on this machine)"
md = open(f"{work}/weir/results.md").read()
md = "\n".join(
    l.replace(l[l.index("Broker: "):l.index(". Machine")], "Broker: " + weir["broker"])
    if l.startswith("Broker: ") else l
    for l in md.split("\n")
)
md += "\nThe peer: the same dedup + route job in Quix Streams (bench/peers/quix_inventory.py), same broker and input, start-up included for both:\n\n"
md += "| guarantee | Weir records/s | Quix Streams records/s | Weir / Quix |\n|---|---:|---:|---:|\n"
for p in peer:
    md += f"| {p['guarantee']} | {p['weir_rate']:.0f} | {p['quix_rate']:.0f} | {p['weir_over_quix']:.1f}× |\n"
open(out + ".md", "w").write(md)
json.dump(weir, open(out + ".json", "w"), indent=2)
print(md)
print(f"written to {out}.md and {out}.json")
PY
