//! Delivery notices: a batch's answer reaches the futures of all its records through one shared
//! notification, not a channel per record, which would cost an allocation, a send and a topic
//! copy per record. Each record's future knows its place in the batch and derives its offset
//! from the batch's base offset.

use std::fmt;

use futures::FutureExt;
use futures::future::Shared;
use tokio::sync::oneshot;

use crate::error::ClientError;

/// What the leader answered for a whole batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    /// Offset of the batch's first record; -1 with `acks=0`.
    pub(crate) base_offset: i64,
    /// The append time when the topic uses log-append time, else -1.
    pub(crate) append_time_ms: i64,
}

type Outcome = Result<Acked, ClientError>;
type Notice = Shared<oneshot::Receiver<Outcome>>;

/// The batch's side: resolves the futures of every record in the batch at once. Dropped
/// unresolved (the producer stopped), the futures end with [`ClientError::Closed`].
pub(crate) struct BatchDelivery {
    tx: oneshot::Sender<Outcome>,
    notice: Notice,
}

impl BatchDelivery {
    pub(crate) fn new() -> Self {
        let (tx, rx) = oneshot::channel();
        Self {
            tx,
            notice: rx.shared(),
        }
    }

    /// The share of the record at `index` in the batch.
    pub(crate) fn ticket(&self, index: usize, timestamp_ms: i64) -> Ticket {
        Ticket {
            notice: self.notice.clone(),
            index: index as i64,
            timestamp_ms,
        }
    }

    /// Tells every record of the batch how it ended.
    pub(crate) fn resolve(self, outcome: Outcome) {
        let _ = self.tx.send(outcome);
    }
}

impl fmt::Debug for BatchDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchDelivery").finish_non_exhaustive()
    }
}

/// One record's share of its batch's notice.
pub(crate) struct Ticket {
    notice: Notice,
    index: i64,
    timestamp_ms: i64,
}

impl Ticket {
    /// Polls the batch's notice; the record's offset and timestamp once it has come.
    pub(crate) fn poll_outcome(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(i64, i64), ClientError>> {
        self.notice.poll_unpin(cx).map(|answer| match answer {
            Err(_) => Err(ClientError::Closed),
            Ok(Err(e)) => Err(e),
            Ok(Ok(acked)) => {
                let offset = if acked.base_offset < 0 {
                    -1
                } else {
                    acked.base_offset + self.index
                };
                let timestamp = if acked.append_time_ms > 0 {
                    acked.append_time_ms
                } else {
                    self.timestamp_ms
                };
                Ok((offset, timestamp))
            }
        })
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}
