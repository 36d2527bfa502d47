//! The cluster-metadata model: the `MetaStore` trait and its backends (etcd; embedded for
//! single-process use), the key layout, typed records, and a watch-fed cache of the cluster.

pub mod cache;
pub mod cluster_id;
/// The conformance suite every `MetaStore` backend passes (for tests: feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod lease;
pub mod store;
/// A throwaway real etcd for tests (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use store::{
    Compare, LeaseId, MetaStore, Op, PrefixWatch, StoreError, Txn, TxnOutcome, Versioned,
    WatchEvent,
};
