//! Connections: one lazily-connected HTTP/2 channel per server address, shared by every request
//! to that server, and the rotation over bootstrap coordinators.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_proto::mux::Protocol;
use sluice_proto::mux::client::{Opener, Outbound, with_open_timeout};
use sluice_proto::pb::log_client::LogClient;
use sluice_proto::transport;
use tonic::transport::{Channel, Endpoint};

use crate::config::normalize_address;
use crate::error::{ClientError, Result};

/// Largest message the client accepts: a fetch returns at least one whole batch, and a topic may
/// allow batches of up to 64 MiB, so tonic's 4 MiB default would refuse legal answers.
pub(crate) const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// Channels by address. A tonic `Channel` multiplexes requests over one HTTP/2 connection and
/// reconnects by itself, so one per server is enough: after a failed connect or a broken
/// connection, a lazy channel reports the error to one request and dials again for the next, so
/// a cached channel to a restarted node recovers (`client/tests` restarts a node to check it).
/// Every connection is pinged ([`transport::KEEP_ALIVE_INTERVAL`]), idle or not, so a node that
/// vanished without closing its sockets (power loss, network cut) is noticed within about a
/// second rather than at the next request's deadline.
#[derive(Debug)]
pub(crate) struct Pool {
    connect_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Pool {
    /// A pool whose connection attempts give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `addr` (`host:port` or a URI); created on first use, connected on the first
    /// request.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        let uri = normalize_address(addr);
        let mut channels = self.channels.lock().unwrap();
        if let Some(ch) = channels.get(&uri) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::Config(format!("bad server address {addr:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(transport::KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(transport::KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(transport::STREAM_WINDOW)
            .initial_connection_window_size(transport::CONNECTION_WINDOW)
            .max_frame_size(transport::MAX_FRAME_SIZE);
        let ch = endpoint.connect_lazy();
        channels.insert(uri, ch.clone());
        Ok(ch)
    }
}

/// A request carrying its deadline, so the server can give up when the client has.
pub(crate) fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Runs `fut` with a deadline; an elapsed deadline becomes [`ClientError::Timeout`].
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = std::result::Result<T, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(ClientError::Timeout(format!("{what} after {timeout:?}"))),
    }
}

/// The bootstrap coordinators. Any of them serves admin and metadata calls (standbys forward
/// writes), so a call goes to the last one that answered and moves on when it is unreachable.
#[derive(Debug)]
pub(crate) struct Coordinators {
    addresses: Vec<String>,
    preferred: AtomicUsize,
    request_timeout: Duration,
}

impl Coordinators {
    pub(crate) fn new(addresses: Vec<String>, request_timeout: Duration) -> Self {
        Self {
            addresses,
            preferred: AtomicUsize::new(0),
            request_timeout,
        }
    }

    /// The coordinator URIs, in bootstrap order.
    pub(crate) fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Index of the coordinator that answered last, where a long-lived stream should start.
    pub(crate) fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    /// Calls `f` on each coordinator in turn until one answers. `idempotent` calls also move on
    /// after a timeout; writes do not, since the first coordinator may have applied them.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        pool: &Pool,
        what: &'static str,
        idempotent: bool,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let n = self.addresses.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = ClientError::Config("no bootstrap address".into());
        for i in 0..n {
            let idx = (start + i) % n;
            let addr = &self.addresses[idx];
            let ch = pool.channel(addr)?;
            match with_timeout(self.request_timeout, what, f(ch, self.request_timeout)).await {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    let move_on = e.try_other_coordinator()
                        || (idempotent && matches!(e, ClientError::Timeout(_)));
                    if !move_on {
                        return Err(e);
                    }
                    tracing::debug!(coordinator = %addr, call = what, error = %e, "coordinator did not answer; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// Opens one stream kind of the `Log` service on a log client.
pub(crate) type OpenStream<P> = fn(
    LogClient<Channel>,
    Outbound<P>,
) -> BoxFuture<
    'static,
    std::result::Result<tonic::Streaming<<P as Protocol>::DownMsg>, tonic::Status>,
>;

/// A mux opener whose streams run on the pool's channels, accept messages up to
/// `decode_limit` bytes, and give up opening after `timeout`.
pub(crate) fn opener<P: Protocol>(
    pool: Arc<Pool>,
    decode_limit: usize,
    timeout: Duration,
    open: OpenStream<P>,
) -> Opener<P> {
    let opener: Opener<P> = Arc::new(move |address, outbound| match pool.channel(&address) {
        Ok(channel) => {
            let client = LogClient::new(channel)
                .max_decoding_message_size(decode_limit)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            open(client, outbound)
        }
        Err(e) => futures::future::ready(Err(tonic::Status::unavailable(e.to_string()))).boxed(),
    });
    with_open_timeout(timeout, opener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pool_reuses_one_channel_per_address() {
        let pool = Pool::new(Duration::from_secs(1));
        pool.channel("127.0.0.1:1").unwrap();
        pool.channel("http://127.0.0.1:1").unwrap();
        pool.channel("127.0.0.1:2").unwrap();
        assert_eq!(pool.channels.lock().unwrap().len(), 2);
        assert!(matches!(
            pool.channel("bad address with spaces"),
            Err(ClientError::Config(_))
        ));
    }

    #[tokio::test]
    async fn coordinator_calls_fail_over_on_transport_errors_only() {
        let pool = Pool::new(Duration::from_secs(1));
        let coords = Coordinators::new(
            vec![
                "http://a:1".into(),
                "http://b:1".into(),
                "http://c:1".into(),
            ],
            Duration::from_secs(1),
        );
        let mut calls = 0;
        let got = coords
            .call(&pool, "test", false, |_, _| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(tonic::Status::unavailable("refused"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(got, 3);
        // The coordinator that answered is tried first next time.
        assert_eq!(coords.preferred.load(Ordering::Relaxed), 2);

        let mut calls = 0;
        let err = coords
            .call(&pool, "test", false, |_, _| {
                calls += 1;
                async move { Err::<(), _>(tonic::Status::invalid_argument("bad")) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(err, ClientError::Api(_)));
    }
}
