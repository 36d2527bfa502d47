//! Many sub-streams on one gRPC stream between two nodes: the one transport under the
//! producer's `ProduceStream`, the consumer's `SubscribeMany` and the follower's
//! `ReplicateMany`. Each of those is a [`Protocol`]: how its sub-stream items are gathered into
//! a wire message and split out of one. [`client::Mux`] keeps one stream per node address,
//! allocates sub-stream ids, routes what arrives and fails every waiter when the stream ends;
//! [`server::serve`] demultiplexes, opens and closes sub-streams on a node and gathers what is
//! ready for all of them into one message.
//!
//! Sub-stream ids grow on each stream in the order sub-streams open, so the node tells a late
//! item for a sub-stream that already ended (an id at or below the last one opened) from an
//! opening one.

pub mod client;
pub mod protocols;
pub mod server;
#[cfg(test)]
mod tests;

use crate::error::ApiError;

/// What a sub-stream's owner sends towards the node.
#[derive(Debug)]
pub enum Up<T> {
    /// An item of sub-stream `id`: its first opens it.
    Item(u64, T),
    /// Sub-stream `id` is no longer read.
    End(u64),
}

/// What the node sends a sub-stream.
#[derive(Debug)]
pub enum Down<T> {
    /// An item, in order.
    Item(T),
    /// The sub-stream's end: why the node refused or stopped it, or `None` when it simply
    /// stopped (the owner may reopen).
    End(Option<ApiError>),
}

/// One multiplexed stream kind: its wire messages and how sub-stream items map to them.
pub trait Protocol: Send + Sync + 'static {
    /// An item towards the node.
    type Up: Send + Unpin + 'static;
    /// An item towards a sub-stream.
    type Down: Send + Unpin + 'static;
    /// The client's wire message.
    type UpMsg: Send + Unpin + 'static;
    /// The node's wire message.
    type DownMsg: Send + Unpin + 'static;

    /// Items the client gathers into one message at most.
    const UP_GATHER: usize;
    /// Items the node gathers into one message at most.
    const DOWN_GATHER: usize;
    /// Whether a sub-stream is one request and its answer: the node's first item for it ends
    /// it, and the client sends no end of its own.
    const ONE_ANSWER: bool;

    /// The message carrying `items` (at least one, at most [`Protocol::UP_GATHER`]).
    fn up_message(items: Vec<Up<Self::Up>>) -> Self::UpMsg;
    /// The items a client message carries, in order.
    fn up_items(msg: Self::UpMsg) -> Vec<Up<Self::Up>>;
    /// The message carrying `items` (at least one, at most [`Protocol::DOWN_GATHER`]).
    fn down_message(items: Vec<(u64, Down<Self::Down>)>) -> Self::DownMsg;
    /// The items a node message carries, in order.
    fn down_items(msg: Self::DownMsg) -> Vec<(u64, Down<Self::Down>)>;
    /// Bytes an item towards a sub-stream adds to a node message (for the message cap).
    fn down_bytes(item: &Down<Self::Down>) -> usize;
}
