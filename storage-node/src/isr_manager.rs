//! The leader's ISR maintenance loop: for every partition this node leads, apply
//! [`crate::replica::isr::isr_change`] with a compare-and-swap on the partition state, fenced by
//! the leader epoch (the stored state must still name this node leader at this epoch) and the
//! key's mod revision (no concurrent change is overwritten). Each member's data-directory
//! incarnation is written with it: kept for members that stay, the registered one for joiners.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, MetaStore, Op, Txn};

use crate::partitions::Partitions;
use crate::replica::Replica;

/// How often the leader reconsiders its ISRs.
const TICK: Duration = Duration::from_millis(100);

/// Runs until the task is aborted.
pub async fn run_isr_manager(
    store: Arc<dyn MetaStore>,
    keys: Keys,
    cache: Arc<MetadataCache>,
    partitions: Arc<Partitions>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let registered: BTreeMap<i32, String> = cache
            .view()
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.incarnation.clone()))
            .collect();
        for r in partitions.all() {
            if let Some(isr) = r.isr_change(&registered) {
                update_isr(store.as_ref(), &keys, &cache, &r, isr, &registered).await;
            }
        }
    }
}

async fn update_isr(
    store: &dyn MetaStore,
    keys: &Keys,
    cache: &MetadataCache,
    r: &Arc<Replica>,
    isr: Vec<i32>,
    registered: &BTreeMap<i32, String>,
) {
    let view = cache.view();
    let Some(stored) = view.partitions.get(&(r.topic_id(), r.partition())) else {
        return;
    };
    let l = r.leadership();
    if stored.record.leader != r.node_id || stored.record.leader_epoch != l.epoch {
        return; // the view lags or this node was deposed: the next view decides
    }
    if stored.record.partition_epoch < r.partition_epoch() {
        return; // our last write is not in the view yet
    }
    let old = stored.record.isr.clone();
    let grows = isr.iter().any(|n| !old.contains(n));
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
    let record = sluice_proto::pb::PartitionStateRecord {
        isr: isr.clone(),
        isr_incarnations,
        partition_epoch: stored.record.partition_epoch + 1,
        ..stored.record.clone()
    };
    if grows {
        // The joining replica counts for the high watermark before anyone can elect it.
        r.set_isr(
            isr.iter()
                .copied()
                .chain(old.iter().copied())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            stored.record.partition_epoch,
        );
    }
    let key = keys.partition(&r.topic_id(), r.partition());
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), stored.mod_revision))
        .then(Op::Put {
            key,
            value: record.encode_to_vec().into(),
            lease: 0,
        });
    match store.txn(txn).await {
        Ok(o) if o.succeeded => {
            tracing::info!(topic = %r.topic, partition = r.partition(), ?old, new = ?isr, epoch = l.epoch, "ISR changed");
            r.set_isr(isr, record.partition_epoch);
        }
        other => {
            if let Err(error) = other {
                tracing::warn!(%error, topic = %r.topic, partition = r.partition(), "ISR update failed");
            }
            if grows {
                r.set_isr(old, stored.record.partition_epoch);
            }
        }
    }
}
