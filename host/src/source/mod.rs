//! Where records come from. Today: Redis lists.

pub mod redis;
