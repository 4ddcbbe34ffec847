//! Everything that talks to Kafka for the runtime: client settings, topic
//! administration, the producer's delivery tracking and the changelog writer.

pub(crate) mod admin;
pub(crate) mod client;
pub(crate) mod producer;
