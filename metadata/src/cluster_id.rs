//! The cluster id: a random id written once, by whichever coordinator or storage node first
//! finds the metadata store without one (a create-only transaction, so concurrent starters
//! agree on one). A storage node keeps it in its data directory and refuses to start against
//! a store that holds another one: its data belongs to a different cluster, and acting on that
//! store's metadata (deleting replicas it does not list) would destroy it.

use bytes::Bytes;

use crate::keys::Keys;
use crate::store::{Compare, MetaStore, Op, StoreError, Txn};

/// The store's cluster id, written now if it has none.
pub async fn ensure(store: &dyn MetaStore, keys: &Keys) -> Result<String, StoreError> {
    let key = keys.cluster_id();
    for _ in 0..3 {
        if let Some(v) = store.get(&key).await? {
            return String::from_utf8(v.value.to_vec())
                .map_err(|_| StoreError::Other(format!("{key} is not UTF-8")));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let txn = Txn::new()
            .when(Compare::CreateRevision(key.clone(), 0))
            .then(Op::Put {
                key: key.clone(),
                value: Bytes::from(id.clone()),
                lease: 0,
            });
        if store.txn(txn).await?.succeeded {
            tracing::info!(cluster_id = %id, "new cluster id");
            return Ok(id);
        }
    }
    Err(StoreError::Other(format!(
        "{key} changed under three attempts to read it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    #[tokio::test]
    async fn the_first_caller_makes_the_id_and_everyone_reads_the_same_one() {
        let store = EmbeddedStore::in_memory();
        let keys = Keys::for_cluster("c");
        let a = ensure(store.as_ref(), &keys).await.unwrap();
        let b = ensure(store.as_ref(), &keys).await.unwrap();
        assert_eq!(a, b);
        let other = ensure(store.as_ref(), &Keys::for_cluster("d"))
            .await
            .unwrap();
        assert_ne!(a, other, "each cluster name has its own");
    }
}
