//! The etcd backend: a thin mapping of [`MetaStore`] onto the etcd v3 API.
//!
//! Keys are used as given (the caller adds the cluster prefix). Every unary call is bounded by
//! the store's timeout so a dead or partitioned etcd turns into [`StoreError::Unavailable`]
//! instead of a hang; watches are long-lived and end with an error when etcd cancels them, the
//! history they need was compacted, or the connection fails (HTTP/2 keep-alive pings detect a
//! silent peer). Reads are linearizable (etcd's default).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, KeyValue, PutOptions, TxnOp, WatchOptions, WatchResponse, WatchResponseStream,
};
use futures::StreamExt;

use crate::store::{
    Compare, LeaseId, MetaStore, Op, PrefixWatch, StoreError, Txn, TxnOutcome, Versioned,
    WatchEvent,
};

/// Default bound on every etcd request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 ping interval on connections with open streams (watches). etcd's default
/// `--grpc-keepalive-min-time` is 5 s and it hangs up on clients that ping more often.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A [`MetaStore`] backed by an etcd cluster.
pub struct EtcdStore {
    client: Client,
    timeout: Duration,
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port`) and checks that etcd answers within `timeout`,
    /// which then bounds every request. Fails with `Unavailable` when etcd is not reachable, so a
    /// process starting before etcd can retry.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Arc<Self>, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, timeout)
            .with_require_leader(true);
        let client = bounded(
            timeout,
            "connect",
            Client::connect(endpoints, Some(options)),
        )
        .await?
        .map_err(map_err)?;
        let store = Self { client, timeout };
        let mut maintenance = store.client.maintenance_client();
        store.call("status", maintenance.status()).await?;
        tracing::debug!(?endpoints, "connected to etcd");
        Ok(Arc::new(store))
    }

    /// Runs one request under the store's timeout, keeping etcd's own error for the caller to
    /// interpret.
    async fn timed<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<Result<T, etcd_client::Error>, StoreError> {
        let start = std::time::Instant::now();
        let result = bounded(self.timeout, what, request).await;
        metrics::histogram!("sluice_metadata_store_duration_seconds", "op" => what)
            .record(start.elapsed().as_secs_f64());
        result
    }

    /// Runs one request under the store's timeout and maps its error.
    async fn call<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.timed(what, request).await?.map_err(map_err)
    }
}

#[async_trait::async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.call("get", kv.get(key, None)).await?;
        response.kvs().first().map(to_versioned).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix();
        let response = self.call("list", kv.get(prefix, Some(options))).await?;
        let items = response
            .kvs()
            .iter()
            .map(to_versioned)
            .collect::<Result<_, _>>()?;
        Ok((items, header_revision(response.header())?))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(key, rev) => {
                    EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, *rev)
                }
                Compare::CreateRevision(key, rev) => {
                    EtcdCompare::create_revision(key.as_str(), CompareOp::Equal, *rev)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                    TxnOp::put(key.as_str(), value.to_vec(), options)
                }
                Op::Delete(key) => TxnOp::delete(key.as_str(), None),
                Op::DeletePrefix(prefix) => {
                    TxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let request = etcd_client::Txn::new().when(compares).and_then(ops);
        let mut kv = self.client.kv_client();
        let response = match self.timed("txn", kv.txn(request)).await? {
            Ok(response) => response,
            Err(e) if is_lease_not_found(&e) => {
                let lease = txn.ops.iter().find_map(|op| match op {
                    Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                    _ => None,
                });
                return Err(StoreError::LeaseExpired(lease.unwrap_or_default()));
            }
            Err(e) => return Err(map_err(e)),
        };
        Ok(TxnOutcome {
            succeeded: response.succeeded(),
            revision: header_revision(response.header())?,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Other("lease ttl must be positive".into()));
        }
        // etcd counts in whole seconds; round up so a lease never lives shorter than asked.
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let response = self.call("grant_lease", lease.grant(seconds, None)).await?;
        if !response.error().is_empty() {
            return Err(StoreError::Other(format!(
                "lease grant refused: {}",
                response.error()
            )));
        }
        Ok(response.id())
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut lease = self.client.lease_client();
        // One request/response on a fresh keep-alive stream; the client reads the answer and
        // reports a ttl of 0 (etcd's "no such lease") as an error.
        match self.timed("keep_alive", lease.keep_alive(id)).await? {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseExpired(id)),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut lease = self.client.lease_client();
        match self.timed("revoke_lease", lease.revoke(id)).await? {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseExpired(id)),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<PrefixWatch, StoreError> {
        let (snapshot, revision) = self.list(prefix).await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = self.client.watch_client();
        let (sender, mut responses) = self
            .call("watch", watch.watch(prefix, Some(options)))
            .await?
            .split();
        // The first response confirms the watch exists (or says why not, e.g. compacted).
        match self.call("watch", responses.message()).await? {
            Some(r) if r.created() && !r.canceled() => {}
            Some(r) => return Err(cancelled(&r)),
            None => {
                return Err(StoreError::Unavailable(
                    "etcd closed the watch stream".into(),
                ));
            }
        }
        let state = WatchState {
            _sender: sender,
            responses,
            pending: VecDeque::new(),
        };
        let events = futures::stream::unfold(Some(state), next_batch).boxed();
        Ok(PrefixWatch {
            snapshot,
            revision,
            events,
        })
    }
}

struct WatchState {
    /// Held so etcd keeps the watch stream open; dropped with the stream.
    _sender: etcd_client::WatchRequestSender,
    responses: WatchResponseStream,
    /// Batches (one per revision) of a response not yet handed out.
    pending: VecDeque<Vec<WatchEvent>>,
}

type Batch = Result<Vec<WatchEvent>, StoreError>;

/// Yields the next revision's events; after an error, ends the stream.
async fn next_batch(state: Option<WatchState>) -> Option<(Batch, Option<WatchState>)> {
    let mut state = state?;
    loop {
        if let Some(batch) = state.pending.pop_front() {
            return Some((Ok(batch), Some(state)));
        }
        let response = match state.responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                let error = StoreError::Unavailable("etcd closed the watch stream".into());
                return Some((Err(error), None));
            }
            Err(e) => return Some((Err(map_err(e)), None)),
        };
        if response.canceled() || response.compact_revision() != 0 {
            return Some((Err(cancelled(&response)), None));
        }
        match group_by_revision(&response) {
            Ok(batches) => state.pending.extend(batches),
            Err(e) => return Some((Err(e), None)),
        }
    }
}

/// Splits a response's events into one batch per revision (etcd may send several revisions in
/// one response; it never splits one revision across responses without `fragment`).
fn group_by_revision(response: &WatchResponse) -> Result<Vec<Vec<WatchEvent>>, StoreError> {
    let mut batches: Vec<(i64, Vec<WatchEvent>)> = Vec::new();
    for event in response.events() {
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::Other("etcd watch event without a key".into()))?;
        let revision = kv.mod_revision();
        let event = match event.event_type() {
            EventType::Put => WatchEvent::Put(to_versioned(kv)?),
            EventType::Delete => WatchEvent::Delete {
                key: key_string(kv)?,
                mod_revision: revision,
            },
        };
        match batches.last_mut() {
            Some((rev, batch)) if *rev == revision => batch.push(event),
            _ => batches.push((revision, vec![event])),
        }
    }
    Ok(batches.into_iter().map(|(_, batch)| batch).collect())
}

fn cancelled(response: &WatchResponse) -> StoreError {
    if response.compact_revision() != 0 {
        StoreError::Unavailable(format!(
            "etcd watch history compacted up to revision {}",
            response.compact_revision()
        ))
    } else {
        StoreError::Unavailable(format!(
            "etcd cancelled the watch: {}",
            response.cancel_reason()
        ))
    }
}

async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<Result<T, etcd_client::Error>, StoreError> {
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| StoreError::Unavailable(format!("etcd {what} timed out after {timeout:?}")))
}

fn to_versioned(kv: &KeyValue) -> Result<Versioned, StoreError> {
    Ok(Versioned {
        key: key_string(kv)?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

fn key_string(kv: &KeyValue) -> Result<String, StoreError> {
    kv.key_str()
        .map(str::to_owned)
        .map_err(|_| StoreError::Other(format!("non-UTF-8 key in etcd: {:?}", kv.key())))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Other("etcd response without a header".into()))
}

/// etcd reports an unknown lease as gRPC `NotFound` ("requested lease not found") on put and
/// revoke, and as a keep-alive answer with ttl 0, which etcd-client turns into this error.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            i32::from(s.code()) == grpc::NOT_FOUND && s.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        _ => false,
    }
}

/// gRPC status codes (fixed by the gRPC spec), so this crate need not depend on tonic itself.
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
}

/// Transient failures (no connection, no leader, timeouts) become `Unavailable`, to retry.
fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => match i32::from(s.code()) {
            grpc::CANCELLED
            | grpc::UNKNOWN
            | grpc::DEADLINE_EXCEEDED
            | grpc::RESOURCE_EXHAUSTED
            | grpc::ABORTED
            | grpc::UNAVAILABLE => StoreError::Unavailable(s.message().to_owned()),
            _ => StoreError::Other(format!("{:?}: {}", s.code(), s.message())),
        },
        E::TransportError(e) => StoreError::Unavailable(e.to_string()),
        E::IoError(e) => StoreError::Unavailable(e.to_string()),
        E::WatchError(m) | E::LeaseKeepAliveError(m) => StoreError::Unavailable(m),
        other => StoreError::Other(other.to_string()),
    }
}
