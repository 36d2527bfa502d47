//! HTTP/2 settings every Sluice server and client shares, so batches flow at loopback speed
//! instead of at h2's defaults (64 KiB windows, 16 KiB frames).

/// Receive window per stream: a whole produce batch (256 KiB by default, up to MiBs) or fetch
/// answer can be in flight without waiting for window updates. Fixed, not adaptive: the
/// adaptive window's slow start costs the first megabytes of every connection. As large as the
/// connection's window, because one `SubscribeMany` stream carries every partition a consumer
/// reads from a node, and a smaller stream window caps catch-up reads (W2) of all of them.
pub const STREAM_WINDOW: u32 = 32 << 20;

/// Receive window per connection, shared by every partition's requests on it.
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// Largest HTTP/2 frame a peer may send: 1 MiB frames carry a fetch answer in a few frames
/// instead of one per 16 KiB, which cuts per-frame work and read syscalls on both sides.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;

/// Every connection between Sluice processes (and from the client library) sends an HTTP/2
/// PING this often, idle or not...
pub const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// ...and drops the connection when a PING is not answered within this. A peer cut off by the
/// network is noticed in about a second, and the stream is reopened as soon as the network
/// heals, instead of after TCP's retransmission backoff (which grows to seconds).
pub const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(750);
