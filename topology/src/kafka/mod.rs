//! Everything that talks to Kafka for the runtime: client settings, topic
//! administration, the producer's delivery tracking and the changelog writer;
//! [`batch`] is public: it reads an assigning consumer's records many at a time.

pub(crate) mod admin;
pub mod batch;
pub(crate) mod client;
pub(crate) mod producer;
#[cfg(test)]
pub(crate) mod testing;
