//! Live topic config changes on a real cluster: `AlterTopicConfig` refuses bad keys and values
//! with `INVALID_CONFIG`, `validate_only` changes nothing, and `min.insync.replicas` and
//! `max.message.bytes` changed on a live topic change what its leader accepts at once, without a
//! restart (asserted on produce answers, not only on the stored config).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::ClientError;
use sluice_integration::{ClusterSpec, TestCluster};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, log_client::LogClient};

const TOPIC: &str = "live";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One `acks=all` produce of a record with a `size`-byte value, straight to the leader.
fn request(size: usize) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: -1,
        timeout_ms: 5_000,
        payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
            records: vec![pb::Record {
                value: Bytes::from(vec![b'x'; size]),
                has_value: true,
                ..Default::default()
            }],
        })),
        compression: pb::Compression::None as i32,
        leader_epoch: -1,
        topic_id: Bytes::new(),
        producer: None,
    }
}

/// Produces until the answer has `want` as its error code (or succeeds, for `None`): a config
/// change reaches the leader through its metadata watch a moment after the controller wrote it.
async fn produce_until(cluster: &TestCluster, size: usize, want: Option<ErrorCode>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = cluster.leader_of(TOPIC, 0).await.unwrap();
        let address = cluster.nodes[leader as usize].address();
        let mut log = LogClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let got = match log.produce(request(size)).await {
            Ok(_) => None,
            Err(status) => Some(ApiError::from_status(&status).code),
        };
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "produce of {size} bytes answered {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code(e: ClientError) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_are_validated_and_take_effect_on_the_live_topic() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let created = admin
        .create_topic(TOPIC, 1, 3, map(&[("min.insync.replicas", "2")]))
        .await
        .unwrap();
    assert!(
        created
            .default_configs
            .contains(&"max.message.bytes".to_string())
    );
    assert!(
        !created
            .default_configs
            .contains(&"min.insync.replicas".to_string())
    );
    cluster
        .wait_full_isr(TOPIC, 1, Duration::from_secs(30))
        .await;

    // Refused, and nothing changes.
    for (set, delete, what) in [
        (map(&[("retention.mss", "1")]), vec![], "retention.mss"),
        (map(&[("retention.ms", "soon")]), vec![], "retention.ms"),
        (
            map(&[("min.insync.replicas", "4")]),
            vec![],
            "replication factor",
        ),
        (
            BTreeMap::new(),
            vec!["no.such.key".to_string()],
            "no.such.key",
        ),
    ] {
        let e = admin
            .alter_topic_config(TOPIC, set, delete, false)
            .await
            .unwrap_err();
        assert_eq!(code(e.clone()), Some(ErrorCode::InvalidConfig), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    let checked = admin
        .alter_topic_config(TOPIC, map(&[("retention.ms", "1000")]), vec![], true)
        .await
        .unwrap();
    assert_eq!(checked.config["retention.ms"], "1000");
    let now = admin.describe_topic(TOPIC).await.unwrap();
    assert_eq!(
        now.config["retention.ms"], "604800000",
        "validate_only changes nothing"
    );
    assert!(now.default_configs.contains(&"retention.ms".to_string()));

    // max.message.bytes: lowered, a 4 KiB batch is refused; removed again, it is accepted.
    produce_until(&cluster, 4096, None).await;
    let t = admin
        .alter_topic_config(TOPIC, map(&[("max.message.bytes", "2048")]), vec![], false)
        .await
        .unwrap();
    assert!(!t.default_configs.contains(&"max.message.bytes".to_string()));
    produce_until(&cluster, 4096, Some(ErrorCode::BatchTooLarge)).await;
    produce_until(&cluster, 100, None).await;
    admin
        .alter_topic_config(
            TOPIC,
            BTreeMap::new(),
            vec!["max.message.bytes".into()],
            false,
        )
        .await
        .unwrap();
    produce_until(&cluster, 4096, None).await;

    // min.insync.replicas: with one follower gone the ISR has two members; raised to three,
    // acks=all writes are refused before the append; lowered back, they are accepted.
    let leader = cluster.leader_of(TOPIC, 0).await.unwrap();
    let follower = (0..3).find(|n| *n != leader as usize).unwrap();
    cluster.kill_node(follower);
    cluster
        .wait_partition(TOPIC, 0, Duration::from_secs(20), |p| p.isr.len() == 2)
        .await
        .unwrap();
    produce_until(&cluster, 100, None).await;
    admin
        .alter_topic_config(TOPIC, map(&[("min.insync.replicas", "3")]), vec![], false)
        .await
        .unwrap();
    produce_until(&cluster, 100, Some(ErrorCode::NotEnoughReplicas)).await;
    admin
        .alter_topic_config(TOPIC, map(&[("min.insync.replicas", "2")]), vec![], false)
        .await
        .unwrap();
    produce_until(&cluster, 100, None).await;
}
