//! A sequence-numbered produce workload and the checker that reads every partition back: the
//! evidence for "no acknowledged record lost, none duplicated, order kept".

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One acknowledged record.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Its per-partition sequence number.
    pub seq: u64,
    /// The offset the leader gave it.
    pub offset: i64,
    /// When it was sent.
    pub sent: Instant,
    /// When its acknowledgement arrived.
    pub acked: Instant,
}

/// What the producer saw, shared with the test while it runs.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Acknowledged records per partition, in acknowledgement order.
    pub acked: BTreeMap<i32, Vec<Ack>>,
    /// Records whose send finally failed (not acknowledged), per partition.
    pub failed: BTreeMap<i32, Vec<u64>>,
    /// Highest sequence sent per partition.
    pub sent: BTreeMap<i32, u64>,
}

/// The value of record `seq` of `partition`.
pub fn value(partition: i32, seq: u64) -> Bytes {
    Bytes::from(format!("p{partition}-{seq:010}"))
}

fn parse(v: &[u8]) -> Option<(i32, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (p, seq) = s.strip_prefix('p')?.split_once('-')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// An `acks=all` producer (16 sends in flight) writing to a topic from [`AcksAllLoad::start`]
/// until [`AcksAllLoad::check`] stops it and checks every acknowledged record.
pub struct AcksAllLoad {
    topic: String,
    partitions: i32,
    ledger: Arc<Mutex<Ledger>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl AcksAllLoad {
    /// Starts producing to `topic`'s `partitions` partitions.
    pub fn start(cluster: &crate::TestCluster, topic: &str, partitions: i32) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let (stop, stopped) = watch::channel(false);
        let cfg = ProducerConfig {
            client: cluster.client_config(),
            acks: sluice_client::Acks::All,
            ..Default::default()
        };
        let task = spawn_producer(cfg, topic, partitions, 16, ledger.clone(), stopped);
        Self {
            topic: topic.to_string(),
            partitions,
            ledger,
            stop,
            task,
        }
    }

    /// Stops the producer and asserts [`assert_guarantees`] on what it recorded.
    pub async fn check(self, cluster: &crate::TestCluster) {
        self.stop.send(true).expect("producer running");
        self.task.await.expect("producer task").expect("producer");
        let ledger = std::mem::take(&mut *self.ledger.lock().expect("ledger"));
        assert_guarantees(cluster, &self.topic, self.partitions, &ledger).await;
    }
}

/// Sends `p<partition>-<seq>` records round robin over `partitions` until `stop` flips, with up
/// to `in_flight` sends outstanding, recording every outcome in the ledger.
pub fn spawn_producer(
    cfg: ProducerConfig,
    topic: &str,
    partitions: i32,
    in_flight: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<anyhow::Result<()>> {
    let topic = topic.to_string();
    tokio::spawn(async move {
        let producer = Producer::new(cfg).await?;
        let mut pending = VecDeque::new();
        let mut seqs: HashMap<i32, u64> = HashMap::new();
        let mut p = 0;
        let settle =
            |ledger: &Arc<Mutex<Ledger>>,
             part: i32,
             seq: u64,
             sent: Instant,
             r: sluice_client::Result<sluice_client::RecordMetadata>| {
                let mut l = ledger.lock().expect("ledger");
                match r {
                    Ok(md) => l.acked.entry(part).or_default().push(Ack {
                        seq,
                        offset: md.offset,
                        sent,
                        acked: Instant::now(),
                    }),
                    Err(error) => {
                        tracing::warn!(%error, part, seq, "send failed");
                        l.failed.entry(part).or_default().push(seq);
                    }
                }
            };
        while !*stop.borrow() {
            let seq = *seqs.entry(p).and_modify(|s| *s += 1).or_insert(0);
            let sent = Instant::now();
            let f = producer
                .send(ProducerRecord::new(topic.as_str(), value(p, seq)).partition(p))
                .await?;
            ledger.lock().expect("ledger").sent.insert(p, seq);
            pending.push_back((p, seq, sent, f));
            while pending.len() >= in_flight {
                let (part, seq, sent, f) = pending.pop_front().expect("non-empty");
                settle(&ledger, part, seq, sent, f.await);
            }
            p = (p + 1) % partitions;
        }
        for (part, seq, sent, f) in pending {
            settle(&ledger, part, seq, sent, f.await);
        }
        producer.close().await?;
        Ok(())
    })
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Acknowledged records checked.
    pub acked: usize,
    /// Records read back.
    pub read: usize,
    /// Records read that were sent but not acknowledged (committed later): allowed.
    pub committed_unacked: usize,
    /// Everything that went wrong; empty when the guarantees held.
    pub violations: Vec<String>,
}

/// Reads every partition from the beginning and checks the ledger against it: every
/// acknowledged record present exactly once at its acknowledged offset, per-partition order
/// kept, nothing duplicated, nothing read that was never sent.
pub async fn check(
    cfg: ConsumerConfig,
    topic: &str,
    partitions: i32,
    ledger: &Ledger,
) -> anyhow::Result<Report> {
    let mut consumer = Consumer::new(cfg).await?;
    consumer
        .assign(
            (0..partitions).map(|p| (topic.to_string(), p)).collect(),
            SeekTo::Earliest,
        )
        .await?;
    let need: HashMap<i32, i64> = ledger
        .acked
        .iter()
        .map(|(p, acks)| (*p, acks.iter().map(|a| a.offset).max().unwrap_or(-1)))
        .collect();
    let mut got: BTreeMap<i32, Vec<(i64, i32, u64)>> = BTreeMap::new();
    let mut report = Report::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = need.iter().all(|(p, max)| {
            got.get(p)
                .and_then(|v| v.last())
                .is_some_and(|l| l.0 >= *max)
        });
        let wait = if done {
            Duration::from_millis(700)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(r))) => {
                let Some((vp, seq)) = r.value.as_deref().and_then(parse) else {
                    report
                        .violations
                        .push(format!("unparsable value at {}-{}", r.partition, r.offset));
                    continue;
                };
                got.entry(r.partition)
                    .or_default()
                    .push((r.offset, vp, seq));
            }
            Ok(Some(Err(e))) => anyhow::bail!("consumer failed: {e}"),
            Ok(None) => break,
            Err(_) if done => break,
            Err(_) => {
                report
                    .violations
                    .push("timed out reading back acknowledged records".into());
                break;
            }
        }
    }
    for (p, records) in &got {
        report.read += records.len();
        let mut seen = HashSet::new();
        let acked: HashMap<u64, i64> = ledger
            .acked
            .get(p)
            .map(|a| a.iter().map(|a| (a.seq, a.offset)).collect())
            .unwrap_or_default();
        let sent_max = ledger.sent.get(p).copied();
        let mut last_acked_seq: Option<u64> = None;
        for &(offset, vp, seq) in records {
            if vp != *p {
                report.violations.push(format!(
                    "record of partition {vp} found in partition {p} at {offset}"
                ));
            }
            if !seen.insert(seq) {
                report.violations.push(format!(
                    "{p}: seq {seq} duplicated (again at offset {offset})"
                ));
            }
            if sent_max.is_none_or(|m| seq > m) {
                report
                    .violations
                    .push(format!("{p}: seq {seq} at {offset} was never sent"));
            }
            match acked.get(&seq) {
                Some(o) if *o != offset => report.violations.push(format!(
                    "{p}: seq {seq} acked at offset {o} but read at {offset}"
                )),
                Some(_) => {
                    if last_acked_seq.is_some_and(|l| l > seq) {
                        report.violations.push(format!(
                            "{p}: acked seq {seq} after acked seq {}",
                            last_acked_seq.unwrap_or(0)
                        ));
                    }
                    last_acked_seq = Some(seq);
                }
                None => report.committed_unacked += 1,
            }
        }
        for seq in acked.keys() {
            if !seen.contains(seq) {
                report
                    .violations
                    .push(format!("{p}: acknowledged seq {seq} lost"));
            }
        }
    }
    for (p, acks) in &ledger.acked {
        report.acked += acks.len();
        if !got.contains_key(p) && !acks.is_empty() {
            report.violations.push(format!(
                "{p}: {} acknowledged records, none read",
                acks.len()
            ));
        }
    }
    Ok(report)
}

/// Reads `topic` back with [`check`] through `cluster`'s coordinators and asserts the
/// guarantees: no violation, something acknowledged, and every send eventually acknowledged
/// (none gave up within the delivery timeout). Prints what it checked.
pub async fn assert_guarantees(
    cluster: &crate::TestCluster,
    topic: &str,
    partitions: i32,
    ledger: &Ledger,
) {
    let failed: usize = ledger.failed.values().map(Vec::len).sum();
    let report = check(
        ConsumerConfig {
            client: cluster.client_config(),
            ..Default::default()
        },
        topic,
        partitions,
        ledger,
    )
    .await
    .expect("checker");
    println!(
        "checked {} acknowledged records, read {} ({} committed without an ack), {} sends failed",
        report.acked, report.read, report.committed_unacked, failed
    );
    assert!(
        report.violations.is_empty(),
        "guarantees violated:\n{}",
        report.violations.join("\n")
    );
    assert!(report.acked > 0);
    assert_eq!(
        failed, 0,
        "every send eventually succeeded within the delivery timeout"
    );
}
