//! Where records come from. Today: Redis lists and streams.

pub mod redis;
