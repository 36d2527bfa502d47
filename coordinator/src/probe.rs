//! Whether a process is gone: its port refuses connections (the host answered that nothing
//! listens there). A timeout proves nothing (a paused or partitioned process does not answer
//! either), so only refusals count. Used by the controller for storage nodes
//! ([`crate::liveness`]) and by standbys for the active controller ([`crate::election`]).

use std::time::Duration;

/// Time between probe rounds.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(150);
/// Refused connections in a row that declare a node dead.
pub const REFUSALS: u32 = 2;
/// A probe that neither connects nor is refused in this time counts as neither.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether a connection attempt to `address` was refused (nothing listens there).
pub async fn refused(address: &str) -> bool {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}
