//! Producer ids for idempotent produce. Any coordinator hands them out, without the controller:
//! it takes a block of [`BLOCK_SIZE`] ids from the `producer_ids` key by compare-and-swap, then
//! serves ids from that block locally. Every block is a CAS on one key, so ids are unique across
//! coordinators, failovers and restarts; a crash only skips the unused rest of a block.

use std::sync::Arc;

use prost::Message;
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, MetaStore, Op, StoreError, Txn};
use sluice_proto::pb::ProducerIdBlockRecord;
use tokio::sync::Mutex;

/// Ids taken from the store at a time: large enough that the store sees one write per thousand
/// producers, small enough that a crash wastes little of the id space.
pub const BLOCK_SIZE: i64 = 1000;
/// CAS attempts before giving up; each lost attempt means another coordinator took a block, so
/// running out means heavy contention or a store that keeps changing the key under us.
const MAX_ATTEMPTS: usize = 64;

/// The ids of the current block not handed out yet: `next..end`.
#[derive(Debug, Default)]
struct Block {
    next: i64,
    end: i64,
}

/// Hands out cluster-unique producer ids from blocks reserved in the metadata store.
pub struct ProducerIdAllocator {
    store: Arc<dyn MetaStore>,
    key: String,
    block: Mutex<Block>,
}

impl ProducerIdAllocator {
    /// An allocator with no block yet; the first [`Self::next_id`] reserves one.
    pub fn new(store: Arc<dyn MetaStore>, keys: &Keys) -> Self {
        Self {
            store,
            key: keys.producer_ids(),
            block: Mutex::new(Block::default()),
        }
    }

    /// A producer id no other caller in the cluster has received or will receive.
    pub async fn next_id(&self) -> Result<i64, StoreError> {
        // Held across the reservation so that concurrent callers wait for one block rather
        // than each reserving their own.
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let start = self.reserve_block().await?;
            *block = Block {
                next: start,
                end: start + BLOCK_SIZE,
            };
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Moves the stored "next unallocated id" forward by one block; returns the block's start.
    async fn reserve_block(&self) -> Result<i64, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let (start, revision) = match self.store.get(&self.key).await? {
                None => (0, 0),
                Some(v) => {
                    let rec = ProducerIdBlockRecord::decode(v.value).map_err(|e| {
                        StoreError::Other(format!("undecodable producer id block record: {e}"))
                    })?;
                    (rec.next_producer_id, v.mod_revision)
                }
            };
            let end = start
                .checked_add(BLOCK_SIZE)
                .filter(|_| start >= 0)
                .ok_or_else(|| {
                    StoreError::Other(format!("producer id space exhausted or corrupt at {start}"))
                })?;
            let txn = Txn::new()
                .when(Compare::ModRevision(self.key.clone(), revision))
                .then(Op::Put {
                    key: self.key.clone(),
                    value: ProducerIdBlockRecord {
                        next_producer_id: end,
                    }
                    .encode_to_vec()
                    .into(),
                    lease: 0,
                });
            if self.store.txn(txn).await?.succeeded {
                tracing::debug!(start, end, "reserved a producer id block");
                return Ok(start);
            }
        }
        Err(StoreError::Unavailable(
            "too much contention on the producer id block; retry".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sluice_metadata::embedded::EmbeddedStore;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_allocators_on_one_store_never_hand_out_the_same_id() {
        let store: Arc<dyn MetaStore> = EmbeddedStore::in_memory();
        let keys = Keys::for_cluster("t");
        let a = Arc::new(ProducerIdAllocator::new(store.clone(), &keys));
        let b = Arc::new(ProducerIdAllocator::new(store.clone(), &keys));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let alloc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..700 {
                    ids.push(alloc.next_id().await.unwrap());
                }
                ids
            }));
        }
        let mut all = BTreeSet::new();
        let mut count = 0;
        for t in tasks {
            for id in t.await.unwrap() {
                count += 1;
                assert!(all.insert(id), "producer id {id} handed out twice");
            }
        }
        assert_eq!(count, 5600);
        assert!(*all.first().unwrap() >= 0);
    }

    #[tokio::test]
    async fn a_restarted_allocator_continues_after_the_last_reserved_block() {
        let store: Arc<dyn MetaStore> = EmbeddedStore::in_memory();
        let keys = Keys::for_cluster("t");
        let first = ProducerIdAllocator::new(store.clone(), &keys);
        assert_eq!(first.next_id().await.unwrap(), 0);
        assert_eq!(first.next_id().await.unwrap(), 1);
        drop(first);
        let restarted = ProducerIdAllocator::new(store.clone(), &keys);
        assert_eq!(restarted.next_id().await.unwrap(), BLOCK_SIZE);
        for expected in BLOCK_SIZE + 1..2 * BLOCK_SIZE + 5 {
            assert_eq!(restarted.next_id().await.unwrap(), expected);
        }
    }
}
