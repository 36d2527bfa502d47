//! gRPC adapters: convert the request, call the controller or the view, convert the answer.

pub mod admin;
pub mod metadata;
