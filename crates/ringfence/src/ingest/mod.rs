//! Ways transactions arrive other than HTTP: [`redis_stream`], a Redis Streams consumer group,
//! and [`kafka`], a Kafka consumer group.

pub mod kafka;
pub mod redis_stream;

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The node can no longer store decisions.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The Kafka client could not be set up (a bad property, an unusable broker list).
    #[error("kafka: {0}")]
    Kafka(String),
}
