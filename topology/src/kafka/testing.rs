//! Test support: an in-process broker with topics and a producer to fill them.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;

/// A one-broker mock cluster.
pub(crate) type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A mock cluster with `topics` (name, partitions), its bootstrap servers
/// and a plain producer connected to it.
pub(crate) fn cluster_with(
    topics: &[(&str, i32)],
) -> (Cluster, String, ThreadedProducer<DefaultProducerContext>) {
    let cluster = MockCluster::new(1).expect("a mock cluster");
    for (name, partitions) in topics {
        cluster
            .create_topic(name, *partitions, 1)
            .expect("a mock topic");
    }
    let brokers = cluster.bootstrap_servers();
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("a producer");
    (cluster, brokers, producer)
}
