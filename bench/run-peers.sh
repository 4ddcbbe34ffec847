#!/usr/bin/env bash
# Weir and its peer, side by side on one broker, in one run.
#
#   bash bench/run-peers.sh [ORDERS] [nisshi|embedded] [THREADS] [QUIX_PROCESSES]
#               (default 1,000,000, nisshi, 1 stream thread, 1 Quix Streams process)
#
# The default is issue 6's size. On nisshi it takes ~14 min on 2 cores; at
# 50,000 orders (~1 min) most of each run is start-up (the raw pipe's first
# output came after 1.1 s of its 1.8 s), so its whole-run ratios compare
# start-ups rather than throughput.
#
# nisshi 0.7.0: durable, transactional, Admin API; it stores in sqlite and
# its write rate bounds both jobs (each writes ~1.65 records per input).
# embedded: the librdkafka mock cluster as `weir broker`, a separate process;
# it serves from memory, so the jobs' own cost is measured. It has no Admin
# API: every topic is created when the broker starts, and Quix Streams runs
# with --no-admin (bench/peers/quix_inventory.py). Input is spread over
# enough partitions to stay under its ~5 MiB a partition, as `weir bench`
# does.
#
# Runs `weir bench --brokers` (raw pipe, Weir at-least-once and exactly-once,
# on nisshi restore, and a dedup store's memory at 1 M and 10 M keys, which
# involves no broker), then bench/peers/quix_inventory.py in both modes
# on the same input topic, and writes bench/results/<date>-<broker>-peers.
# {md,json} (nisshi: <date>-nisshi.{md,json}) with the Weir / Quix ratios.
# THREADS > 1 runs Weir's jobs with that many stream threads (Quix Streams
# has one per process) and adds -threadsN to the file name. QUIX_PROCESSES
# > 1 runs that many copies of the Quix job in one consumer group, as Quix
# Streams scales out (the same cores as Weir's threads), and adds -quixN;
# their rate is the input's records over the slowest copy's time. Both jobs'
# runs end at the commit that covers their last input record; the table
# also gives each job's steady rate (start-up and the end left out), each
# job's CPU time per input record (its own processes, not the broker's) and
# the Quix Streams, Python and client versions.
# Installs what it needs (nisshi through scripts/nisshi.sh, quixstreams from
# PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS="${1:-1000000}"
KIND="${2:-nisshi}"
THREADS="${3:-1}"
QUIX_PROCESSES="${4:-1}"
source scripts/env.sh
bash scripts/setup.sh >/dev/null
python3 -c "import quixstreams" 2>/dev/null || python3 -m pip install -q quixstreams
cargo build --release --workspace --all-targets
WEIR="$CARGO_TARGET_DIR/release/weir"
[ -x "$WEIR" ] || WEIR=target/release/weir

WORK="$(mktemp -d)"
PIDS=()
# The broker and, if one copy failed, the other Quix copies.
trap 'kill "${BROKER:-0}" "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
case "$KIND" in
nisshi)
  NISSHI="${WEIR_NISSHI:-$(bash scripts/nisshi.sh)}"
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
  BENCH=(--partitions 8 --steps raw,alo,eos,restore,memory)
  QUIX=()
  NAME="nisshi 0.7.0 (sqlite storage, a separate process on this machine)"
  OUT="bench/results/$(date +%F)-nisshi"
  ;;
embedded)
  # As `weir bench` on the embedded broker: ~340 bytes a record, 1.21
  # records an order, at most ~3 MiB a partition.
  P="$(python3 -c "import math,sys; print(max(8, math.ceil(int(sys.argv[1]) * 1.21 * 340 / 3 / 1048576)))" "$ORDERS")"
  # The topics `weir bench` uses (src/bench.rs, `topics`) and Quix's.
  TOPICS=()
  for t in bench-in bench-raw-out quix-alo-confirmed quix-eos-confirmed \
    changelog__quix-inventory-alo--bench-in--default \
    changelog__quix-inventory-eos--bench-in--default; do
    TOPICS+=(--topic "$t:$P")
  done
  for m in alo eos lat-alo lat-eos; do
    TOPICS+=(--topic "bench-$m-confirmed:$P" --topic "bench-$m-dedup-changelog:$P" --topic "bench-$m-dlq:1")
  done
  TOPICS+=(--topic "bench-lat-alo-in:$P" --topic "bench-lat-eos-in:$P" --topic quix-alo-dlq:1 --topic quix-eos-dlq:1)
  "$WEIR" broker "${TOPICS[@]}" --bootstrap-file "$WORK/bootstrap" --log warn >"$WORK/broker.log" 2>&1 &
  BROKER=$!
  for _ in $(seq 1 100); do [ -s "$WORK/bootstrap" ] && break; sleep 0.1; done
  B="$(cat "$WORK/bootstrap")"
  # As `weir bench` sets for its in-process embedded broker (see its results).
  BENCH=(--partitions "$P" --steps raw,alo,eos,memory -X consumer.fetch.wait.max.ms=10 -X consumer.session.timeout.ms=6000)
  QUIX=(--no-admin)
  NAME="the embedded broker (librdkafka mock cluster) as \`weir broker\`, a separate process on this machine"
  OUT="bench/results/$(date +%F)-embedded-peers"
  ;;
*)
  echo "broker: nisshi or embedded, not $KIND" >&2
  exit 2
  ;;
esac
BENCH+=(--stream-threads "$THREADS")
[ "$THREADS" = 1 ] || OUT="$OUT-threads$THREADS"
[ "$QUIX_PROCESSES" = 1 ] || OUT="$OUT-quix$QUIX_PROCESSES"

"$WEIR" bench --brokers "$B" --orders "$ORDERS" "${BENCH[@]}" --log error --out "$WORK/weir"
N="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['input_records'])" "$WORK/weir/results.json")"
# Every order gives one confirmation and every poison record one dead
# letter, in either job (src/load.rs: 1% poison, rounded).
OUTPUTS="$(python3 -c "import sys; n=int(sys.argv[1]); print(n + round(n * 0.01))" "$ORDERS")"
for g in at-least-once exactly-once; do
  echo "  … quixstreams, $g, $QUIX_PROCESSES process(es)"
  # All copies past their imports before any joins the group; none leaves
  # before all are done (bench/peers/quix_inventory.py).
  START_AT="$(python3 -c 'import time; print(time.time() + 5)')"
  BARRIER="$WORK/barrier-$g"
  mkdir -p "$BARRIER"
  PIDS=()
  for i in $(seq 1 "$QUIX_PROCESSES"); do
    python3 bench/peers/quix_inventory.py --brokers "$B" --guarantee "$g" \
      --outputs "$OUTPUTS" --copies "$QUIX_PROCESSES" --barrier "$BARRIER" --start-at "$START_AT" \
      --out "$WORK/quix-$g-$i.json" "${QUIX[@]}" 2> >(grep -v -i -E 'deprecat|httpx2' >&2) &
    PIDS+=($!)
  done
  for pid in "${PIDS[@]}"; do wait "$pid"; done
done

python3 - "$WORK" "$OUT" "$NAME" "$QUIX_PROCESSES" "$N" <<'PY'
import json, sys
work, out, name, procs, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
from importlib.metadata import version
import platform
versions = f"{version('quixstreams')} (Python {platform.python_version()}, confluent-kafka {version('confluent-kafka')}, rocksdict {version('rocksdict')})"
weir = json.load(open(f"{work}/weir/results.json"))
quix = {}
for g in ["at-least-once", "exactly-once"]:
    copies = [json.load(open(f"{work}/quix-{g}-{i}.json")) for i in range(1, procs + 1)]
    seconds = max(c["seconds"] for c in copies)
    # Every copy's watcher saw the same output topics: their mean.
    steady = sum(c["steady_seconds"] for c in copies) / len(copies)
    quix[g] = {"processes": procs, "copies": copies, "records": n, "seconds": seconds, "rate": n / seconds,
               "steady_rate": 0.8 * n / steady,
               # Every copy's CPU over its own run, added up.
               "cpu_us_per_record": sum(c["cpu_seconds"] for c in copies) * 1e6 / n}
rows = {r["name"]: r for r in weir["rows"]}
peer = []
for g in quix:
    w, q = rows[f"weir inventory, {g}"], quix[g]
    peer.append({"guarantee": g, "weir_rate": w["rate"], "quix_rate": q["rate"], "weir_over_quix": w["rate"] / q["rate"],
                 "weir_steady_rate": w["steady_rate"], "quix_steady_rate": q["steady_rate"],
                 "weir_over_quix_steady": w["steady_rate"] / q["steady_rate"],
                 "weir_cpu_us_per_record": w["cpu_us_per_record"], "quix_cpu_us_per_record": q["cpu_us_per_record"],
                 "quix_cpu_over_weir": q["cpu_us_per_record"] / w["cpu_us_per_record"],
                 "quix_processes": procs, "quix_copies": q["copies"]})
weir["peer"] = peer
weir["peer_versions"] = versions
weir["broker"] = name
md = open(f"{work}/weir/results.md").read()
md = "\n".join(
    l.replace(l[l.index("Broker: "):l.index(". Machine")], "Broker: " + weir["broker"])
    if l.startswith("Broker: ") else l
    for l in md.split("\n")
)
md += f"\nThe peer: the same dedup + route job in Quix Streams {versions} (bench/peers/quix_inventory.py), same broker and input"
md += f"; Weir: one process, {weir['stream_threads']} stream thread(s); Quix Streams: {procs} process(es) in one consumer group."
md += " Both runs end at the commit that covers the last input record, each at its own commit interval (1 s at-least-once, 100 ms exactly-once), start-up included;"
md += " the steady rate leaves start-up and the end out: the input's rate while each job's outputs on the broker (sampled every 50 ms, the crossings interpolated) went from 10% to 90% of their number."
md += " CPU µs/record: each job's processes' CPU time (user + system, every thread) over its whole run, per input record; the broker's is in neither:\n\n"
md += "| guarantee | Weir records/s | Quix Streams records/s | Weir / Quix | Weir steady | Quix Streams steady | Weir / Quix steady | Weir CPU µs/record | Quix Streams CPU µs/record | Quix / Weir CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
for p in peer:
    md += (f"| {p['guarantee']} | {p['weir_rate']:.0f} | {p['quix_rate']:.0f} | {p['weir_over_quix']:.1f}× "
           f"| {p['weir_steady_rate']:.0f} | {p['quix_steady_rate']:.0f} | {p['weir_over_quix_steady']:.1f}× "
           f"| {p['weir_cpu_us_per_record']:.2f} | {p['quix_cpu_us_per_record']:.2f} | {p['quix_cpu_over_weir']:.1f}× |\n")
open(out + ".md", "w").write(md)
json.dump(weir, open(out + ".json", "w"), indent=2)
print(md)
print(f"written to {out}.md and {out}.json")
PY
