//! gRPC adapters of the storage node.

pub mod codec;
pub mod fetch;
pub mod log;
pub mod produce;
pub mod replicate;
pub mod replicate_many;
pub mod resolve;
pub mod streams;
