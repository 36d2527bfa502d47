//! The `MetaStore` trait: the small slice of etcd's model Sluice needs (revisioned keys,
//! compare-and-swap transactions, leases, prefix watches). Two backends implement it, etcd
//! ([`crate::etcd::EtcdStore`]) and embedded ([`crate::embedded::EmbeddedStore`]), and one
//! conformance suite ([`crate::conformance`]) runs unchanged against both.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

/// A lease id; keys written under a lease vanish when it expires or is revoked.
pub type LeaseId = i64;

/// A value with the store revisions that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The key, in full (with the cluster prefix).
    pub key: String,
    /// The stored bytes (an encoded protobuf record).
    pub value: Bytes,
    /// Revision of the transaction that created the key.
    pub create_revision: i64,
    /// Revision of the last transaction that modified the key.
    pub mod_revision: i64,
    /// The lease that owns the key, or 0.
    pub lease: LeaseId,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals the given one; 0 means "the key does not exist".
    ModRevision(String, i64),
    /// The key's create revision equals the given one; 0 means "the key does not exist".
    /// Used for fencing: a controller key re-created by someone else has another create revision.
    CreateRevision(String, i64),
}

/// A write a transaction applies when all its compares hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes `value` at `key`, owned by `lease` when it is not 0.
    Put {
        /// Full key.
        key: String,
        /// New value.
        value: Bytes,
        /// Owning lease, or 0.
        lease: LeaseId,
    },
    /// Deletes one key (no error when absent).
    Delete(String),
    /// Deletes every key that starts with the prefix.
    DeletePrefix(String),
}

/// An atomic compare-and-swap over several keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `ops` to apply.
    pub compares: Vec<Compare>,
    /// Applied atomically, in order, when the compares hold.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a compare.
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    /// Adds an operation.
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// True when every compare held and the ops were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged when it failed).
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or modified.
    Put(Versioned),
    /// A key was deleted (or its lease expired); carries the key and the deleting revision.
    Delete {
        /// Full key.
        key: String,
        /// Revision of the deletion.
        mod_revision: i64,
    },
}

/// A consistent snapshot of a prefix plus the stream of every later change to it.
pub struct PrefixWatch {
    /// Every key under the prefix at `revision`, sorted by key.
    pub snapshot: Vec<Versioned>,
    /// The store revision of the snapshot.
    pub revision: i64,
    /// Changes after `revision`, in revision order. The stream ends (or yields an error) when the
    /// store can no longer follow, e.g. after a compaction or a lost connection: the caller
    /// starts a new `watch_prefix` and reconciles against the fresh snapshot.
    pub events: BoxStream<'static, Result<Vec<WatchEvent>, StoreError>>,
}

/// Failures of a metadata store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time; retry later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist any more (expired or revoked).
    #[error("lease {0} expired or was revoked")]
    LeaseExpired(LeaseId),
    /// The store refused or failed the request.
    #[error("metadata store error: {0}")]
    Other(String),
}

/// The metadata store Sluice's control plane runs on. Implementations must give linearizable
/// reads and transactions, monotonic revisions shared by all keys, and watches that deliver
/// every change after the snapshot exactly once and in order.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Reads every key under `prefix`, sorted by key, with the store revision of the read.
    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, i64), StoreError>;
    /// Applies `txn` atomically if all its compares hold.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    /// Creates a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Refreshes a lease; `LeaseExpired` when it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Revokes a lease, deleting every key it owns.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// A snapshot of `prefix` and the stream of its later changes.
    async fn watch_prefix(&self, prefix: &str) -> Result<PrefixWatch, StoreError>;
}
