//! gRPC adapters of the storage node.

pub mod log;
pub mod resolve;
