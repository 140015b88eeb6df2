//! Ways transactions arrive other than HTTP: [`redis_stream`], a Redis Streams consumer group.

pub mod redis_stream;
