"""The Inventory job (dedup + route) written with Quix Streams, for `weir bench`'s
side-by-side figures. Same input, same shape of work: decode JSON, validate,
drop orderIds seen before (RocksDB state with a changelog topic), confirmed
orders to one topic, undecodable/invalid ones to a dead-letter topic.

    python3 bench/peers/quix_inventory.py --brokers HOST:PORT \
        --guarantee exactly-once --expect N --out result.json

Runs until it has processed N input records, then prints and writes
{"records": N, "seconds": ..., "rate": ...} (start-up included, as for Weir).

Quix Streams scales out by processes (one thread each). To compare on the
same cores as Weir with several stream threads, start several copies with
--until-outputs M instead of --expect (same consumer group, each with a
share of the partitions): each stops once the confirmed and dead-letter
topics together hold M records (every input order or poison record gives
exactly one), which it checks every 100 ms; "records" is then what this
copy processed (the copies' figures add up), and "seconds" runs until the
copy has stopped. --start-at makes copies start together: one joining
while another commits fails that commit (REBALANCE_IN_PROGRESS), which
stops a Quix Streams application; the same failure of the last commit, as
the first copy to stop leaves, is recorded ("final_commit_error"), not fatal.

Quix Streams creates its changelog topics through the Admin API and reads
every topic's configuration back (DescribeConfigs), so the broker must have
both (nisshi does once the topic has retention.ms set: `weir topics create
--retention-ms`). With --no-admin it runs on a broker that has neither (the
embedded broker, `weir broker`): every topic, its changelog
(changelog__quix-inventory-<alo|eos>--<input>--default) included, must exist
with the input's partition count, and the configurations Quix would read
are taken to be a Kafka broker's defaults (compaction for the changelog).
"""

import argparse
import atexit
import json
import shutil
import tempfile
import time

from quixstreams import Application

p = argparse.ArgumentParser()
p.add_argument("--brokers", required=True)
p.add_argument("--input", default="bench-in")
p.add_argument("--guarantee", choices=["exactly-once", "at-least-once"], required=True)
until = p.add_mutually_exclusive_group(required=True)
until.add_argument("--expect", type=int, help="input records to process")
until.add_argument(
    "--until-outputs",
    type=int,
    help="stop when the output topics hold this many records (one of several processes)",
)
p.add_argument("--out")
p.add_argument(
    "--start-at",
    type=float,
    help="wall-clock time (epoch seconds) to start at, after the imports: copies "
    "started together join their group in one rebalance",
)
p.add_argument(
    "--no-admin",
    action="store_true",
    help="the broker has no Admin API: topics exist, configurations are assumed",
)
args = p.parse_args()

if args.no_admin:
    from quixstreams.models.topics.admin import TopicAdmin
    from quixstreams.models.topics.topic import TopicConfig

    def inspect_topics(self, topic_names, timeout=30):
        cluster = self.list_topics(timeout=timeout)
        return {
            name: TopicConfig(
                num_partitions=len(cluster[name].partitions),
                replication_factor=1,
                extra_config={
                    "retention.ms": "604800000",
                    "retention.bytes": "-1",
                    "cleanup.policy": "compact" if name.startswith("changelog__") else "delete",
                },
            )
            if name in cluster
            else None
            for name in topic_names
        }

    def create_topics(self, topics, timeout=30, finalize_timeout=60):
        missing = [t.name for t in topics if t.name not in self.list_topics(timeout=timeout)]
        if missing:
            raise SystemExit(f"--no-admin: create these topics first: {', '.join(missing)}")

    TopicAdmin.inspect_topics = inspect_topics
    TopicAdmin.create_topics = create_topics

mode = "eos" if args.guarantee == "exactly-once" else "alo"
# A fresh state directory per run (no state carried between runs), removed
# at exit: each run's RocksDB store is ~30 MB.
state_dir = tempfile.mkdtemp(prefix="quix-state-")
atexit.register(shutil.rmtree, state_dir, ignore_errors=True)
if args.start_at is not None:
    time.sleep(max(0.0, args.start_at - time.time()))
started = time.monotonic()
app = Application(
    broker_address=args.brokers,
    consumer_group=f"quix-inventory-{mode}",
    auto_offset_reset="earliest",
    processing_guarantee=args.guarantee,
    commit_interval=0.1 if mode == "eos" else 1.0,
    state_dir=state_dir,
    loglevel="WARNING",
)
source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
confirmed = app.topic(f"quix-{mode}-confirmed", key_serializer="bytes", value_serializer="bytes")
dead = app.topic(f"quix-{mode}-dlq", key_serializer="bytes", value_serializer="json")

seen_records = 0


def invalid(event):
    """The Inventory job's validity rules that decide routing."""
    if not isinstance(event, dict) or event.get("eventType") != "OrderReceived":
        return "eventType"
    if event.get("version") != 1:
        return "version"
    data = event.get("data")
    if not isinstance(data, dict):
        return "data"
    order_id = data.get("orderId")
    if not isinstance(order_id, str) or not order_id:
        return "data.orderId"
    items = data.get("items")
    if not isinstance(items, list) or not items:
        return "data.items"
    total = 0.0
    for item in items:
        if not isinstance(item, dict):
            return "data.items[]"
        q, price = item.get("quantity"), item.get("price")
        if not isinstance(q, int) or isinstance(q, bool) or q < 1:
            return "quantity"
        if not isinstance(price, (int, float)) or isinstance(price, bool) or price < 0:
            return "price"
        total += q * price
    if total > 1_000_000:
        return "total"
    return None


def route(value, state):
    global seen_records
    seen_records += 1
    if args.expect is not None and seen_records >= args.expect:
        app.stop()
    if value is None:
        return {"to": "dead", "error": "deserialization: no value", "original": None}
    try:
        event = json.loads(value)
    except (ValueError, UnicodeDecodeError) as e:
        return {"to": "dead", "error": f"deserialization: {e}", "original": value.decode("latin-1")}
    why = invalid(event)
    if why is not None:
        return {"to": "dead", "error": f"validation: {why}", "original": value.decode("latin-1")}
    order_id = event["data"]["orderId"]
    if state.get(order_id) is not None:
        return {"to": "drop"}
    state.set(order_id, 1)
    return {"to": "ok", "value": value}


sdf = app.dataframe(source)
sdf = sdf.apply(route, stateful=True)
sdf = sdf.filter(lambda v: v["to"] != "drop")
ok = sdf.filter(lambda v: v["to"] == "ok")
ok.apply(lambda v: v["value"]).to_topic(confirmed)
bad = sdf.filter(lambda v: v["to"] == "dead")
bad.to_topic(dead)


def stop_when_outputs_reach(total):
    """Stops the app once the output topics' end offsets add up to `total`
    (or when they cannot be read: the broker is gone, nothing will come)."""
    global outputs_complete_at
    from confluent_kafka import Consumer, TopicPartition

    watcher = Consumer({"bootstrap.servers": args.brokers, "group.id": f"quix-watch-{mode}"})
    try:
        topics = [confirmed.name, dead.name]
        parts = [
            TopicPartition(t, p)
            for t in topics
            for p in watcher.list_topics(t, timeout=30).topics[t].partitions
        ]
        while True:
            ends = sum(
                watcher.get_watermark_offsets(tp, timeout=30, cached=False)[1] for tp in parts
            )
            if ends >= total:
                outputs_complete_at = time.monotonic()
                break
            time.sleep(0.1)
    finally:
        watcher.close()
        app.stop()


# When every output was there (--until-outputs).
outputs_complete_at = None
final_commit_error = None
if args.until_outputs is not None:
    import threading

    from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError

    threading.Thread(target=stop_when_outputs_reach, args=(args.until_outputs,), daemon=True).start()
    try:
        app.run()
    except CheckpointConsumerCommitError as e:
        # The copy that stops first leaves the group; the other's last
        # commit can then meet the rebalance. The work was all done (every
        # output is there); any other failure, or one before then, is fatal.
        if outputs_complete_at is None:
            raise
        final_commit_error = str(e)
else:
    app.run()
# Until the app has stopped (its last commit included), as with --expect
# and as Weir's runs end when their input is committed.
seconds = time.monotonic() - started
result = {
    "peer": "quixstreams",
    "guarantee": args.guarantee,
    "records": seen_records,
    "seconds": seconds,
    "rate": seen_records / seconds,
}
if final_commit_error is not None:
    result["final_commit_error"] = final_commit_error
print(json.dumps(result))
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f)
