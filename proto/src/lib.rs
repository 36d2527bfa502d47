//! The contract every Sluice component shares: the generated gRPC code of package `sluice.v1`
//! (in [`pb`]), validated domain newtypes ([`model`]), the error table that maps failures to gRPC
//! status and stable codes ([`error`]), and the record-batch codec ([`batch`]).

pub mod batch;
pub mod cluster_config;
pub mod error;
pub mod model;
pub mod mux;
pub mod server;
pub mod topic_config;
pub mod transport;

/// Generated protobuf and gRPC code. Domain code converts to [`model`] types at the boundary.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sluice.v1");

    /// Encoded `FileDescriptorSet` of every Sluice proto, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));
}
