//! One `SubscribeMany` stream per node for every partition a consumer reads from that node.
//!
//! The node sends what committed for all of them in one message (one push, HTTP/2 frame and
//! wake-up per burst instead of per partition), and this session task hands each partition's
//! part to that partition's fetch task over a small bounded channel, so the tasks decode in
//! parallel.
//!
//! Each partition's fetch task owns its partition: it picks the leader, registers with that
//! node's session, delivers what arrives, and retries when the subscription ends (an error from
//! the node, the stream breaking, the leader moving). A push still in the channel when the task
//! leaves is dropped undelivered, so its position stays exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, log_client::LogClient};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::fetcher::Stop;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;

/// A consumer's sessions, one per node address.
pub(crate) struct Sessions {
    meta: Arc<Metadata>,
    /// Largest message a session accepts.
    decode_limit: usize,
    by_address: Mutex<HashMap<String, Arc<Session>>>,
}

/// One node's stream and the subscriptions on it.
struct Session {
    control: mpsc::UnboundedSender<pb::SubscribeControl>,
    routes: Mutex<Routes>,
    next_id: AtomicU32,
    /// Woken when the last subscription left, so an unused stream closes.
    idle: Notify,
}

#[derive(Default)]
struct Routes {
    by_id: HashMap<u32, Route>,
    /// Cleared (under the lock) when the session task ends; nothing registers after that.
    closed: bool,
}

struct Route {
    events: mpsc::Sender<Event>,
}

/// What a session hands a subscription's fetch task.
pub(crate) enum Event {
    /// Committed batches, in order.
    Data(pb::FetchResponse),
    /// The node ended the subscription, or delivery cannot go on.
    End(Stop),
}

/// Pushes a session holds per subscription before it waits for the fetch task.
const ROUTE_DEPTH: usize = 2;

/// A subscription registered with a session; dropping it ends the subscription.
pub(crate) struct Registration {
    session: Arc<Session>,
    id: u32,
    /// The subscription's pushes; closed when the session ended.
    pub(crate) events: mpsc::Receiver<Event>,
}

impl Sessions {
    pub(crate) fn new(meta: Arc<Metadata>, decode_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            meta,
            decode_limit,
            by_address: Mutex::new(HashMap::new()),
        })
    }

    /// Subscribes at the node at `address` from `fetch`'s offset.
    pub(crate) fn add(
        self: &Arc<Self>,
        address: &str,
        fetch: pb::FetchRequest,
    ) -> Result<Registration> {
        loop {
            let session = self.session(address)?;
            let id = session.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, events) = mpsc::channel(ROUTE_DEPTH);
            {
                let mut routes = session.routes.lock().unwrap();
                if routes.closed {
                    // The session ended just now; start another.
                    drop(routes);
                    self.forget_session(address, &session);
                    continue;
                }
                routes.by_id.insert(id, Route { events: tx });
            }
            let add = pb::SubscribeControl {
                add: vec![pb::Subscription {
                    id,
                    fetch: Some(fetch.clone()),
                }],
                remove: vec![],
            };
            // A send can only fail once the task ended, and then it has ended the route too.
            let _ = session.control.send(add);
            return Ok(Registration {
                session,
                id,
                events,
            });
        }
    }

    fn session(self: &Arc<Self>, address: &str) -> Result<Arc<Session>> {
        let mut by_address = self.by_address.lock().unwrap();
        if let Some(s) = by_address.get(address) {
            return Ok(s.clone());
        }
        let channel = self.meta.pool.channel(address)?;
        let client = LogClient::new(channel).max_decoding_message_size(self.decode_limit);
        let (control, rx) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            control,
            routes: Mutex::new(Routes::default()),
            next_id: AtomicU32::new(1),
            idle: Notify::new(),
        });
        by_address.insert(address.to_string(), session.clone());
        tokio::spawn(run(
            session.clone(),
            Arc::downgrade(self),
            address.to_string(),
            client,
            rx,
        ));
        Ok(session)
    }

    fn forget_session(&self, address: &str, session: &Arc<Session>) {
        let mut by_address = self.by_address.lock().unwrap();
        if by_address
            .get(address)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            by_address.remove(address);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.session.forget(self.id);
    }
}

impl Session {
    /// Drops a route and tells the node.
    fn forget(&self, id: u32) {
        let (route, empty) = {
            let mut routes = self.routes.lock().unwrap();
            let route = routes.by_id.remove(&id);
            (route, routes.by_id.is_empty())
        };
        if route.is_none() {
            return;
        }
        let _ = self.control.send(pb::SubscribeControl {
            add: vec![],
            remove: vec![id],
        });
        if empty {
            self.idle.notify_one();
        }
    }

    fn events(&self, id: u32) -> Option<mpsc::Sender<Event>> {
        let routes = self.routes.lock().unwrap();
        routes.by_id.get(&id).map(|r| r.events.clone())
    }
}

/// Follows the node's stream until it fails or nobody uses it, then ends every route left.
async fn run(
    session: Arc<Session>,
    sessions: Weak<Sessions>,
    address: String,
    client: LogClient<tonic::transport::Channel>,
    control: mpsc::UnboundedReceiver<pb::SubscribeControl>,
) {
    let why = follow(&session, client, control).await;
    // Dropping the routes closes their channels: each fetch task then resubscribes.
    let left = {
        let mut routes = session.routes.lock().unwrap();
        routes.closed = true;
        std::mem::take(&mut routes.by_id)
    };
    tracing::debug!(%address, subscriptions = left.len(), ?why, "subscription stream ended");
    if let Some(sessions) = sessions.upgrade() {
        sessions.forget_session(&address, &session);
    }
}

async fn follow(
    session: &Session,
    mut client: LogClient<tonic::transport::Channel>,
    control: mpsc::UnboundedReceiver<pb::SubscribeControl>,
) -> Stop {
    let opened = client
        .subscribe_many(UnboundedReceiverStream::new(control))
        .await;
    let mut stream = match opened {
        Ok(r) => r.into_inner(),
        Err(status) => return Stop::Failed(status.into()),
    };
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = session.idle.notified() => {
                let mut routes = session.routes.lock().unwrap();
                if routes.by_id.is_empty() {
                    routes.closed = true;
                    return Stop::Failed(ClientError::Transport("no subscriptions left".into()));
                }
                continue;
            }
        };
        let pushes = match message {
            Ok(Some(m)) => m.pushes,
            Ok(None) => {
                return Stop::Failed(ClientError::Transport(
                    "the leader ended the subscription".into(),
                ));
            }
            Err(status) => return Stop::Failed(status.into()),
        };
        for push in pushes {
            let Some(events) = session.events(push.id) else {
                continue; // removed meanwhile
            };
            let event = match (push.error, push.data) {
                (Some(detail), _) => {
                    let e = ApiError::from_detail(detail, push.message);
                    session.routes.lock().unwrap().by_id.remove(&push.id);
                    Event::End(Stop::Failed(ClientError::Api(e)))
                }
                (None, Some(data)) => Event::Data(data),
                (None, None) => continue,
            };
            // Waits while the fetch task is behind (the consumer's queue is full): the stream
            // then stops being read and HTTP/2 flow control holds the node back.
            if events.send(event).await.is_err() {
                session.forget(push.id); // the fetch task has gone
            }
        }
    }
}
