//! Every metric name Weir exports, in one place, with a fixed label set.
//! Labels stay bounded: topics, partitions, stores, failure kinds — never
//! keys or free text.

/// Counter `{topic}`: input records consumed.
pub const RECORDS_CONSUMED: &str = "weir_records_consumed_total";
/// Counter `{topic}`: records delivered to output topics (sinks, dead letters, changelogs).
pub const RECORDS_PRODUCED: &str = "weir_records_produced_total";
/// Counter `{store}`: records dropped by a dedup operator.
pub const DUPLICATES: &str = "weir_duplicates_total";
/// Counter `{store}`: dedup keys removed after their retention.
pub const DEDUP_EXPIRED: &str = "weir_dedup_expired_total";
/// Counter `{store}`: entries a dedup operator indexed after a full restore.
pub const DEDUP_INDEX_REBUILT: &str = "weir_dedup_index_rebuilt_total";
/// Counter `{kind}`: records routed to the dead-letter topic.
pub const DLQ_RECORDS: &str = "weir_dlq_records_total";
/// Gauge `{topic, partition}`: high watermark minus the next offset to process.
pub const CONSUMER_LAG: &str = "weir_consumer_lag";
/// Counter: successful commits.
pub const COMMITS: &str = "weir_commits_total";
/// Histogram (seconds): one run of the commit protocol.
pub const COMMIT_LATENCY: &str = "weir_commit_latency_seconds";
/// Histogram (seconds): processing time per record (measured per poll batch).
pub const PROCESS_LATENCY: &str = "weir_process_latency_seconds";
/// Histogram `{topic}` (seconds): input record timestamp to delivery of the output.
pub const END_TO_END_LATENCY: &str = "weir_end_to_end_latency_seconds";
/// Counter `{result}`: Kafka transactions committed or aborted (exactly-once only).
pub const TRANSACTIONS: &str = "weir_transactions_total";
/// Counter `{operation}`: operations retried after a transient failure.
pub const RETRIES: &str = "weir_retries_total";
/// Gauge `{store, partition}`: records per second of the running restore.
pub const RESTORE_RATE: &str = "weir_restore_rate_records_per_second";
/// Histogram `{store}` (seconds): duration of completed restores.
pub const RESTORE_DURATION: &str = "weir_restore_duration_seconds";
/// Counter `{store}`: changelog records applied during restore.
pub const RESTORE_RECORDS: &str = "weir_restore_records_total";
/// Gauge `{store, partition}`: changelog records left to restore.
pub const RESTORE_REMAINING: &str = "weir_restore_remaining_records";
/// Gauge: input partitions assigned to this instance.
pub const ASSIGNED_PARTITIONS: &str = "weir_assigned_partitions";
/// Counter: rebalances (assignments) seen.
pub const REBALANCES: &str = "weir_rebalances_total";
/// Gauge `{store, partition}`: approximate entries in a store partition.
pub const STORE_ENTRIES: &str = "weir_store_entries";

/// Label: topic name.
pub const LABEL_TOPIC: &str = "topic";
/// Label: partition number.
pub const LABEL_PARTITION: &str = "partition";
/// Label: store name.
pub const LABEL_STORE: &str = "store";
/// Label: failure kind (`deserialization`, `validation`, `processing`).
pub const LABEL_KIND: &str = "kind";
/// Label: transaction outcome (`committed`, `aborted`).
pub const LABEL_RESULT: &str = "result";
/// Label: the retried operation (`commit`).
pub const LABEL_OPERATION: &str = "operation";

/// Registers help texts with the installed recorder, so `/metrics` explains
/// itself. Call once after installing a recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS_CONSUMED, "Input records consumed");
    describe_counter!(RECORDS_PRODUCED, "Records delivered, by topic");
    describe_counter!(DUPLICATES, "Records dropped as duplicates, by dedup store");
    describe_counter!(
        DEDUP_EXPIRED,
        "Dedup keys removed after their retention, by store"
    );
    describe_counter!(
        DEDUP_INDEX_REBUILT,
        "Dedup entries given their time-index entry after a full restore, by store"
    );
    describe_counter!(
        DLQ_RECORDS,
        "Records routed to the dead-letter topic, by failure kind"
    );
    describe_gauge!(CONSUMER_LAG, "High watermark minus next offset to process");
    describe_counter!(COMMITS, "Successful commits");
    describe_histogram!(COMMIT_LATENCY, Unit::Seconds, "Duration of one commit");
    describe_histogram!(PROCESS_LATENCY, Unit::Seconds, "Processing time per record");
    describe_histogram!(
        END_TO_END_LATENCY,
        Unit::Seconds,
        "Input timestamp to output delivery"
    );
    describe_counter!(TRANSACTIONS, "Kafka transactions by result");
    describe_counter!(RETRIES, "Operations retried after a transient failure");
    describe_gauge!(RESTORE_RATE, "Records per second of the running restore");
    describe_histogram!(
        RESTORE_DURATION,
        Unit::Seconds,
        "Duration of completed restores"
    );
    describe_counter!(RESTORE_RECORDS, "Changelog records applied during restore");
    describe_gauge!(RESTORE_REMAINING, "Changelog records left to restore");
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Input partitions assigned to this instance"
    );
    describe_counter!(REBALANCES, "Partition assignments received");
    describe_gauge!(STORE_ENTRIES, "Approximate entries per store partition");
}

/// Creates every labelled series a topology will use, at zero, so dashboards
/// and alerts see data (and `increase()` works) from the first scrape.
pub(crate) fn register_series(topology: &crate::Topology, application_id: &str) {
    use ::metrics::{counter, gauge};
    let source = topology.source_topic().to_string();
    counter!(RECORDS_CONSUMED, LABEL_TOPIC => source).absolute(0);
    let mut produced: Vec<String> = topology.sink_topics().to_vec();
    produced.extend(topology.dead_letter_topic().map(str::to_string));
    for s in topology.stores() {
        counter!(DUPLICATES, LABEL_STORE => s.name.clone()).absolute(0);
        counter!(DEDUP_EXPIRED, LABEL_STORE => s.name.clone()).absolute(0);
        counter!(DEDUP_INDEX_REBUILT, LABEL_STORE => s.name.clone()).absolute(0);
        counter!(RESTORE_RECORDS, LABEL_STORE => s.name.clone()).absolute(0);
        if s.changelog {
            produced.push(crate::Topology::changelog_topic(application_id, &s.name));
        }
    }
    for t in produced {
        counter!(RECORDS_PRODUCED, LABEL_TOPIC => t).absolute(0);
    }
    if topology.dead_letter_topic().is_some() {
        for kind in ["deserialization", "validation", "processing"] {
            counter!(DLQ_RECORDS, LABEL_KIND => kind).absolute(0);
        }
    }
    for result in ["committed", "aborted"] {
        counter!(TRANSACTIONS, LABEL_RESULT => result).absolute(0);
    }
    counter!(RETRIES, LABEL_OPERATION => "commit").absolute(0);
    counter!(COMMITS).absolute(0);
    counter!(REBALANCES).absolute(0);
    gauge!(ASSIGNED_PARTITIONS).set(0.0);
}
