//! The leader's ISR maintenance loop: for every partition this node leads, apply
//! [`crate::replica::isr::isr_change`] with a compare-and-swap on the partition state, fenced by
//! the leader epoch (the stored state must still name this node leader at this epoch) and the
//! key's mod revision (no concurrent change is overwritten). Each member's data-directory
//! incarnation is written with it: kept for members that stay, the registered one for joiners.
//!
//! The changes of one tick go out together, [`MAX_PER_TXN`] partitions per transaction (a
//! node that comes back to thousands of partitions rejoins their ISRs in a few writes, not
//! thousands); a transaction that loses a compare is retried one partition at a time, so one
//! stale partition does not hold back the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, MetaStore, Op, Txn};
use sluice_proto::pb::PartitionStateRecord;

use crate::partitions::Partitions;
use crate::replica::Replica;

/// How often the leader reconsiders its ISRs.
const TICK: Duration = Duration::from_millis(100);
/// Partitions per transaction (etcd refuses more than 128 compares or operations).
const MAX_PER_TXN: usize = 64;

/// Runs until the task is aborted.
pub async fn run_isr_manager(
    store: Arc<dyn MetaStore>,
    keys: Keys,
    cache: Arc<MetadataCache>,
    partitions: Arc<Partitions>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_registered = BTreeMap::new();
    loop {
        tick.tick().await;
        let view = cache.view();
        let registered: BTreeMap<i32, String> = view
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.incarnation.clone()))
            .collect();
        // Only replicas whose decision may have changed: every one when the registered nodes
        // changed, else those with an event since the last look or a member lagging. Idle
        // partitions cost nothing here.
        let candidates = if registered == last_registered {
            partitions.needing_isr_check()
        } else {
            last_registered = registered.clone();
            partitions.all()
        };
        let updates: Vec<Update> = candidates
            .into_iter()
            .filter_map(|r| {
                let isr = r.isr_change(&registered)?;
                Update::prepare(&view, &keys, r, isr, &registered)
            })
            .collect();
        for chunk in updates.chunks(MAX_PER_TXN) {
            write(store.as_ref(), chunk).await;
        }
    }
}

/// One partition's ISR change, ready to write.
struct Update {
    r: Arc<Replica>,
    key: String,
    mod_revision: i64,
    old: Vec<i32>,
    stored_epoch: i32,
    record: PartitionStateRecord,
}

impl Update {
    /// The record to write for `isr`, or `None` when this node's view does not let it write
    /// (it lags, or this node was deposed). A growing ISR is applied locally at once: the
    /// joining replica counts for the high watermark before anyone can elect it.
    fn prepare(
        view: &ClusterView,
        keys: &Keys,
        r: Arc<Replica>,
        isr: Vec<i32>,
        registered: &BTreeMap<i32, String>,
    ) -> Option<Self> {
        let stored = view.partitions.get(&(r.topic_id(), r.partition()))?;
        let l = r.leadership();
        if stored.record.leader != r.node_id || stored.record.leader_epoch != l.epoch {
            return None; // the view lags or this node was deposed: the next view decides
        }
        if stored.record.partition_epoch < r.partition_epoch() {
            return None; // our last write is not in the view yet
        }
        let old = stored.record.isr.clone();
        let isr_incarnations = isr
            .iter()
            .filter_map(|n| {
                let kept = old
                    .contains(n)
                    .then(|| stored.record.isr_incarnations.get(n).cloned())
                    .flatten();
                kept.or_else(|| registered.get(n).cloned()).map(|i| (*n, i))
            })
            .collect();
        let record = PartitionStateRecord {
            isr: isr.clone(),
            isr_incarnations,
            partition_epoch: stored.record.partition_epoch + 1,
            ..stored.record.clone()
        };
        if isr.iter().any(|n| !old.contains(n)) {
            let union: BTreeSet<i32> = isr.iter().chain(&old).copied().collect();
            r.set_isr(union.into_iter().collect(), stored.record.partition_epoch);
        }
        Some(Self {
            key: keys.partition(&r.topic_id(), r.partition()),
            mod_revision: stored.mod_revision,
            stored_epoch: stored.record.partition_epoch,
            old,
            record,
            r,
        })
    }

    fn add_to(&self, txn: Txn) -> Txn {
        txn.when(Compare::ModRevision(self.key.clone(), self.mod_revision))
            .then(Op::Put {
                key: self.key.clone(),
                value: self.record.encode_to_vec().into(),
                lease: 0,
            })
    }

    fn written(&self) {
        let (r, l) = (&self.r, self.r.leadership());
        tracing::info!(topic = %r.topic, partition = r.partition(), old = ?self.old, new = ?self.record.isr, epoch = l.epoch, "ISR changed");
        r.set_isr(self.record.isr.clone(), self.record.partition_epoch);
    }

    fn failed(&self) {
        if self.record.isr.iter().any(|n| !self.old.contains(n)) {
            self.r.set_isr(self.old.clone(), self.stored_epoch);
        }
    }
}

/// Writes `updates` in one transaction; when it loses a compare, one at a time.
async fn write(store: &dyn MetaStore, updates: &[Update]) {
    let txn = updates.iter().fold(Txn::new(), |txn, u| u.add_to(txn));
    match store.txn(txn).await {
        Ok(o) if o.succeeded => updates.iter().for_each(Update::written),
        Ok(_) if updates.len() > 1 => {
            for u in updates {
                Box::pin(write(store, std::slice::from_ref(u))).await;
            }
        }
        other => {
            if let Err(error) = other {
                tracing::warn!(%error, partitions = updates.len(), "ISR update failed");
            }
            updates.iter().for_each(Update::failed);
        }
    }
}
