//! librdkafka settings for each client the runtime creates.

use rdkafka::ClientConfig;

use crate::StreamsConfig;

/// Which client a setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    Consumer,
    Producer,
    Restore,
    Admin,
}

impl Client {
    fn prefix(self) -> &'static str {
        match self {
            Client::Consumer => "consumer.",
            Client::Producer => "producer.",
            Client::Restore => "restore.consumer.",
            Client::Admin => "admin.",
        }
    }
}

/// Unprefixed overrides, then the client's prefixed ones (they win).
fn apply_overrides(cfg: &StreamsConfig, client: Client, c: &mut ClientConfig) {
    let prefixes = ["consumer.", "producer.", "restore.consumer.", "admin."];
    for (k, v) in &cfg.client_overrides {
        if !prefixes.iter().any(|p| k.starts_with(p)) {
            c.set(k, v);
        }
    }
    for (k, v) in &cfg.client_overrides {
        if let Some(rest) = k.strip_prefix(client.prefix()) {
            // "restore.consumer.x" also starts with neither other prefix, so no clash.
            if client != Client::Consumer || !k.starts_with("restore.") {
                c.set(rest, v);
            }
        }
    }
}

/// How long librdkafka waits before fetching again for a partition whose
/// pre-fetch queue was full (its default: 1000 ms). One fetch over many
/// partitions overfills the 64 MiB queue at once, and every partition in it
/// then sat out a whole second after the queue had drained. Measured on the
/// embedded broker, 131 partitions: restoring 1,000,000 entries took 5.4 s
/// with the default and 1.2 s with 10 ms; the at-least-once job went from
/// 90k to 136k records/s.
pub(crate) const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The settings of one client.
pub(crate) fn config(cfg: &StreamsConfig, client: Client, instance: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    c.set(
        "client.id",
        format!(
            "{}-{instance}-{}",
            cfg.application_id,
            client.prefix().trim_end_matches('.')
        ),
    );
    match client {
        Client::Consumer => {
            c.set("group.id", &cfg.application_id)
                // Commits happen only in the commit protocol.
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // A new group starts from the beginning: an order that arrived
                // before the job first started must still be processed.
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false")
                // Never process records of aborted or open transactions.
                .set("isolation.level", "read_committed")
                .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        }
        Client::Producer => {
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("compression.type", "lz4")
                // Java clients' partitioner, so keys land where Kafka Streams
                // and every JVM producer would put them.
                .set("partitioner", "murmur2_random");
            if cfg.guarantee == crate::config::Guarantee::ExactlyOnce {
                c.set(
                    "transactional.id",
                    format!("{}-{instance}", cfg.application_id),
                )
                .set(
                    "transaction.timeout.ms",
                    cfg.transaction_timeout.as_millis().to_string(),
                );
            }
        }
        Client::Restore => {
            // Restore assigns changelog partitions explicitly and never joins
            // or commits; librdkafka still wants a group id for `assign`.
            c.set("group.id", format!("{}.restore", cfg.application_id))
                .set("isolation.level", "read_committed")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false")
                .set("fetch.max.bytes", "52428800")
                .set("max.partition.fetch.bytes", "10485760")
                // Restore reads records that exist, up to a known end:
                // waiting at the end of a partition gains nothing.
                .set("fetch.wait.max.ms", "10")
                .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        }
        Client::Admin => {}
    }
    apply_overrides(cfg, client, &mut c);
    c
}

/// The low and high watermarks librdkafka last saw for a partition, without
/// a network round trip (`None` when it has not fetched from it yet).
pub(crate) fn cached_watermarks<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the call; librdkafka only
    // reads the topic string and writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low.max(0), high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_overrides_reach_only_their_client() {
        let cfg = StreamsConfig::new("app", "b:1")
            .set("socket.timeout.ms", "1000")
            .set("consumer.session.timeout.ms", "6000")
            .set("restore.consumer.fetch.max.bytes", "1000")
            .set("producer.linger.ms", "20");
        let consumer = config(&cfg, Client::Consumer, "i");
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("socket.timeout.ms"), Some("1000"));
        assert_eq!(consumer.get("fetch.max.bytes"), None);
        let producer = config(&cfg, Client::Producer, "i");
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        let restore = config(&cfg, Client::Restore, "i");
        assert_eq!(restore.get("fetch.max.bytes"), Some("1000"));
        assert_eq!(restore.get("group.id"), Some("app.restore"));
    }
}
