"""The Inventory job (dedup + route) written with Quix Streams, for `weir bench`'s
side-by-side figures. Same input, same shape of work: decode JSON, validate,
drop orderIds seen before (RocksDB state with a changelog topic), confirmed
orders to one topic, undecodable/invalid ones to a dead-letter topic.

    python3 bench/peers/quix_inventory.py --brokers HOST:PORT \
        --guarantee exactly-once --outputs M --out result.json

Runs until every input record is processed and committed, then prints and
writes {"records": ..., "seconds": ..., "rate": ..., "steady_seconds": ...,
"cpu_seconds": ...}: "cpu_seconds" is this process's CPU time (user +
system, every thread, from getrusage) over the same run, as `weir bench`
counts its own.
M is how many records the confirmed and dead-letter topics hold at the end
(every input order or poison record gives exactly one). The run ends as
Weir's does in `weir bench`: at the commit that covers the last input
record, each at its own commit interval (1 s at-least-once, 100 ms
exactly-once, as Weir's defaults); start-up is included. A watcher thread
samples the output topics every 50 ms (one ListOffsets request) to tell
when all M are there and when they passed 10% and 90% of M (interpolated
between the samples around each mark, as `weir bench` does):
"steady_seconds" is the time between, the run without its start-up and
its end (`weir bench` times Weir's outputs the same way).
A commit hook (Quix Streams' ProcessingContext.commit_checkpoint) notes the
offsets each commit covered; the copy stops once every partition it owns
is committed up to the input's end offsets, read before the run.

Quix Streams scales out by processes (one thread each). To compare on the
same cores as Weir with several stream threads, start several copies (same
consumer group, each with a share of the partitions): "records" is then
what this copy processed (the copies' figures add up), and "seconds" runs
until its last commit; the run's time is the slowest copy's. --start-at
makes copies start together: one joining while another commits fails that
commit (REBALANCE_IN_PROGRESS), which stops a Quix Streams application; the
copies wait for each other at the end (--copies N --barrier DIR): a copy
leaving starts a rebalance, which a sibling's last commit must not meet.

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
import os
import resource
import tempfile
import threading
import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from quixstreams import Application, message_context


def cpu_seconds():
    """CPU time (user + system) of this process so far, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


p = argparse.ArgumentParser()
p.add_argument("--brokers", required=True)
p.add_argument("--input", default="bench-in")
p.add_argument("--guarantee", choices=["exactly-once", "at-least-once"], required=True)
p.add_argument(
    "--outputs",
    type=int,
    required=True,
    help="records the confirmed and dead-letter topics hold once every input is processed",
)
p.add_argument("--out")
p.add_argument("--copies", type=int, default=1, help="copies of this job in the group")
p.add_argument(
    "--barrier",
    help="a directory shared by the copies (with --copies > 1): none stops before all are done",
)
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
# The input is fixed: its end offsets, read before the clock starts, are
# where every copy's commits must reach.
admin = AdminClient({"bootstrap.servers": args.brokers})
input_parts = admin.list_topics(timeout=30).topics[args.input].partitions
input_ends = {
    tp.partition: f.result().offset
    for tp, f in admin.list_offsets(
        {TopicPartition(args.input, p): OffsetSpec.latest() for p in input_parts},
        request_timeout=30,
    ).items()
}
if args.start_at is not None:
    time.sleep(max(0.0, args.start_at - time.time()))
started = time.monotonic()
started_cpu = cpu_seconds()
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
    ctx = message_context()
    positions[ctx.partition] = ctx.offset + 1
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


# What the watcher and the commit hook share. `route` and every commit run
# on the app's thread; the watcher only reads.
positions = {}  # input partition -> offset after the last record processed
committed_positions = {}  # the same, as of the last commit that covered new records
committed_at = None  # when that commit finished
committed_cpu = None  # this process's CPU seconds then
outputs_complete_at = None
steady = {}  # output fraction -> seconds since start


def hook_commits():
    """Notes when each commit that covers newly processed records finishes:
    the run ends at the commit covering this copy's last input record, as
    Weir's ends when its last record is committed (both at their own
    commit interval; neither is asked to commit early)."""
    from quixstreams.processing.context import ProcessingContext

    original = ProcessingContext.commit_checkpoint

    def commit_checkpoint(self, *a, **kw):
        global committed_positions, committed_at, committed_cpu
        before, covered = self.checkpoint, dict(positions)
        original(self, *a, **kw)
        if self.checkpoint is not before and covered != committed_positions:
            committed_positions, committed_at = covered, time.monotonic()
            committed_cpu = cpu_seconds()

    ProcessingContext.commit_checkpoint = commit_checkpoint


def watch(total):
    """Samples the output topics' end offsets every 50 ms (one ListOffsets
    request for all partitions), notes when they pass 10% and 90% of
    `total` (the steady-state window, each crossing interpolated between
    the samples around it) and when all are there; then stops the
    app once this copy's every processed record is committed. Stops the app
    too when the broker cannot be read (nothing will come)."""
    global outputs_complete_at
    try:
        topics = [confirmed.name, dead.name]
        meta = admin.list_topics(timeout=30)
        parts = {
            TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in meta.topics[t].partitions
        }
        last = None
        while outputs_complete_at is None:
            futures = admin.list_offsets(parts, request_timeout=30)
            ends = sum(f.result().offset for f in futures.values())
            now = time.monotonic() - started
            for fraction in (0.1, 0.9):
                target = fraction * total
                if ends >= target and fraction not in steady:
                    at = now
                    if last is not None and last[0] < target and ends > last[0]:
                        at = last[1] + (now - last[1]) * (target - last[0]) / (ends - last[0])
                    steady[fraction] = at
            last = (ends, now)
            if ends >= total:
                outputs_complete_at = now
                break
            time.sleep(0.05)
        # Every record of every partition this copy owns is committed (the
        # input is fixed: its end offsets were read before the run).
        while not all(
            committed_positions.get(tp.partition, 0) >= input_ends[tp.partition]
            for tp in app._consumer.assignment()
        ):
            time.sleep(0.005)
        # No copy leaves before every copy's work is committed: a copy
        # leaving starts a rebalance, which a sibling's last commit must not
        # meet.
        if args.barrier:
            open(os.path.join(args.barrier, str(os.getpid())), "w").close()
            while len(os.listdir(args.barrier)) < args.copies:
                time.sleep(0.005)
    finally:
        app.stop()


hook_commits()
threading.Thread(target=watch, args=(args.outputs,), daemon=True).start()
app.run()
if outputs_complete_at is None or committed_at is None:
    raise SystemExit("stopped before every output was there and committed")
# Until the commit that covered this copy's last record.
seconds = committed_at - started
result = {
    "peer": "quixstreams",
    "guarantee": args.guarantee,
    "records": seen_records,
    "seconds": seconds,
    "rate": seen_records / seconds,
    # All copies' outputs between 10% and 90% of the total, over the time
    # between: the rate without start-up and the last commit.
    "steady_seconds": steady[0.9] - steady[0.1],
    "cpu_seconds": committed_cpu - started_cpu,
}
print(json.dumps(result))
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f)
