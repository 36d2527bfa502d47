//! The three workloads against a Sluice cluster through `sluice-client`, as a user's application
//! would run them: the batching producer, the fetching consumer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sluice_client::{
    Acks, Admin, ClientConfig, Compression, Consumer, ConsumerConfig, DeliveryFuture, Producer,
    ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_proto::pb::ErrorCode;
use tokio::sync::mpsc;

use crate::latency::LatencyRecorder;
use crate::payload::{Payloads, now_ns, read_stamp};
use crate::progress::Progress;
use crate::report::Report;
use crate::workload::Workload;

/// Client settings of a Sluice run (the workload's shape is in [`Workload`]).
#[derive(Debug, Clone)]
pub struct SluiceOptions {
    /// Cluster address and timeouts.
    pub client: ClientConfig,
    /// Durability asked for each batch.
    pub acks: Acks,
    /// Batch compression.
    pub compression: Compression,
    /// How long a batch waits for more records.
    pub linger: Duration,
    /// Largest batch per partition, bytes.
    pub batch_size: usize,
    /// Requests in flight per producer.
    pub max_in_flight: usize,
    /// Producer buffer, bytes (backpressure bound).
    pub buffer_memory: usize,
    /// Producer instances in this process, each sending `count / producers` records.
    pub producers: usize,
    /// Replication factor when the run creates its topic (0: cluster default).
    pub replication_factor: i32,
    /// `min.insync.replicas` when the run creates its topic.
    pub min_insync: Option<u32>,
    /// Further topic config when the run creates its topic (e.g. retention).
    pub topic_config: BTreeMap<String, String>,
    /// Largest fetch answer, bytes.
    pub fetch_max_bytes: i32,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Default for SluiceOptions {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            acks: Acks::All,
            compression: Compression::None,
            linger: Duration::from_millis(5),
            batch_size: 1024 * 1024,
            max_in_flight: 8,
            buffer_memory: 64 * 1024 * 1024,
            producers: 1,
            replication_factor: 0,
            min_insync: None,
            topic_config: BTreeMap::new(),
            fetch_max_bytes: 8 * 1024 * 1024,
            progress: true,
        }
    }
}

impl SluiceOptions {
    fn producer_config(&self) -> ProducerConfig {
        ProducerConfig {
            client: self.client.clone(),
            acks: self.acks,
            // Idempotence is the safe default and only exists with acks=all.
            enable_idempotence: self.acks == Acks::All,
            linger: self.linger,
            batch_size: self.batch_size,
            compression: self.compression,
            max_in_flight: self.max_in_flight,
            buffer_memory: self.buffer_memory,
            ..ProducerConfig::default()
        }
    }

    fn consumer_config(&self, max_wait: Duration) -> ConsumerConfig {
        ConsumerConfig {
            client: self.client.clone(),
            max_wait,
            min_bytes: 1,
            max_bytes: self.fetch_max_bytes,
            queue_records: 50_000,
            ..ConsumerConfig::default()
        }
    }

    /// The fetch-side knobs of a consume run.
    fn consume_settings(&self, w: &Workload, report: Report) -> Report {
        report
            .setting("topic", &w.topic)
            .setting("record_size", w.record_size)
            .setting("fetch_max_bytes", self.fetch_max_bytes)
    }

    /// The producer-side knobs of a produce or e2e run.
    fn settings(&self, w: &Workload, report: Report) -> Report {
        let acks = match self.acks {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        };
        report
            .setting("topic", &w.topic)
            .setting("partitions", w.partitions)
            .setting("record_size", w.record_size)
            .setting("key_size", w.key_size)
            .setting("acks", acks)
            .setting(
                "compression",
                format!("{:?}", self.compression).to_lowercase(),
            )
            .setting("linger_ms", self.linger.as_millis())
            .setting("batch_size", self.batch_size)
            .setting("producers", self.producers)
    }
}

/// Creates the run's topic when it does not exist yet; an existing topic is used as it is.
pub async fn ensure_topic(w: &Workload, o: &SluiceOptions) -> Result<()> {
    let admin = Admin::connect(o.client.clone()).await?;
    match admin.describe_topic(&w.topic).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => {}
        Err(e) => return Err(e).context("describing the benchmark topic"),
    }
    let mut config = o.topic_config.clone();
    if let Some(m) = o.min_insync {
        config.insert("min.insync.replicas".to_string(), m.to_string());
    }
    admin
        .create_topic(
            &w.topic,
            i32::try_from(w.partitions).context("--partitions is too large")?,
            o.replication_factor,
            config,
        )
        .await
        .context("creating the benchmark topic")?;
    Ok(())
}

/// W1: sends `count` records as fast as acknowledgements allow; the clock runs from the first
/// send to the last acknowledgement.
pub async fn produce(w: &Workload, o: &SluiceOptions) -> Result<Report> {
    w.validate()?;
    ensure_topic(w, o).await?;
    let producers = o.producers.max(1);
    let progress = Progress::new(w.count, "produce", o.progress);
    let mut clients = Vec::with_capacity(producers);
    for _ in 0..producers {
        clients.push(Arc::new(Producer::new(o.producer_config()).await?));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, producer) in clients.into_iter().enumerate() {
        let share = w.count / producers as u64 + u64::from((i as u64) < w.count % producers as u64);
        let (w, progress) = (w.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            send_all(producer, &w, share, i as u64, progress).await
        }));
    }
    let (mut acked, mut failed, mut end) = (0, 0, start);
    for t in tasks {
        let (ok, bad, last) = t.await??;
        acked += ok;
        failed += bad;
        end = end.max(last);
    }
    progress.finish();
    let mut report = Report::new(
        "sluice",
        "produce",
        acked,
        acked * w.record_size as u64,
        end - start,
    );
    report.failed = failed;
    Ok(o.settings(w, report))
}

/// One producer's share of W1: sends, and hands each delivery future to a task that awaits them
/// in order, so a million pending futures never pile up. Returns (acked, failed, last ack).
async fn send_all(
    producer: Arc<Producer>,
    w: &Workload,
    count: u64,
    seed: u64,
    progress: Progress,
) -> Result<(u64, u64, Instant)> {
    let (tx, acker) = spawn_acker(Some(progress));
    let mut payloads = Payloads::new(w.record_size, w.key_size, seed);
    for _ in 0..count {
        let record = ProducerRecord::new(w.topic.clone(), payloads.value()).key(payloads.key());
        let delivery = producer.send(record).await.context("send")?;
        if tx.send(delivery).await.is_err() {
            bail!("the acknowledgement task stopped");
        }
    }
    drop(tx);
    producer.flush().await?;
    Ok(acker.await?)
}

/// Spawns the task that awaits delivery futures in send order, so the sending loop never waits
/// on an acknowledgement. It yields (acked, failed, time of the last answer).
fn spawn_acker(
    progress: Option<Progress>,
) -> (
    mpsc::Sender<DeliveryFuture>,
    tokio::task::JoinHandle<(u64, u64, Instant)>,
) {
    let (tx, mut rx) = mpsc::channel::<DeliveryFuture>(64 * 1024);
    let acker = tokio::spawn(async move {
        let (mut ok, mut bad, mut last) = (0u64, 0u64, Instant::now());
        let mut first_error = None;
        // The clock and the progress bar are read once per run of acknowledgements that were
        // already queued, not per record: at a million records a second they cost ~3 % of CPU.
        let mut unreported = 0u64;
        while let Some(f) = rx.recv().await {
            match f.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    bad += 1;
                    first_error.get_or_insert(e);
                }
            }
            unreported += 1;
            if rx.is_empty() || unreported >= 4096 {
                last = Instant::now();
                if let Some(p) = &progress {
                    p.inc(unreported);
                }
                unreported = 0;
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(error = %e, failed = bad, "some records were not acknowledged");
        }
        (ok, bad, last)
    });
    (tx, acker)
}

/// Each sent record's send stamp (ns since the Unix epoch) and the future of its acknowledgement.
type SentRecords = mpsc::UnboundedSender<(u64, DeliveryFuture)>;

/// Like [`spawn_acker`], but times each record from its send stamp to its acknowledgement.
/// Acknowledgements are awaited as they come, not in send order, so a slow partition does not
/// delay the others' figures. Returns the failures and the latencies of the acknowledged.
fn spawn_timed_acker() -> (SentRecords, tokio::task::JoinHandle<(u64, LatencyRecorder)>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, DeliveryFuture)>();
    let acker = tokio::spawn(async move {
        let mut lat = LatencyRecorder::new();
        let mut failed = 0u64;
        let mut pending = FuturesUnordered::new();
        let mut note = |(stamp, acked): (u64, bool), lat: &mut LatencyRecorder| {
            if acked {
                lat.record_ns(i128::from(now_ns()) - i128::from(stamp));
            } else {
                failed += 1;
            }
        };
        loop {
            tokio::select! {
                sent = rx.recv() => match sent {
                    Some((stamp, delivery)) => {
                        pending.push(async move { (stamp, delivery.await.is_ok()) });
                    }
                    None => break,
                },
                Some(done) = pending.next(), if !pending.is_empty() => note(done, &mut lat),
            }
        }
        while let Some(done) = pending.next().await {
            note(done, &mut lat);
        }
        (failed, lat)
    });
    (tx, acker)
}

/// W2: reads `count` records from offset 0 of every partition; the clock runs from the first
/// fetch to the last record.
pub async fn consume(w: &Workload, o: &SluiceOptions) -> Result<Report> {
    w.validate()?;
    let mut consumer = Consumer::new(o.consumer_config(Duration::from_millis(500))).await?;
    let partitions = consumer.partitions_for(&w.topic).await?;
    let progress = Progress::new(w.count, "consume", o.progress);
    let start = Instant::now();
    consumer
        .assign(
            partitions.iter().map(|p| (w.topic.clone(), *p)).collect(),
            SeekTo::Earliest,
        )
        .await?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let idle = Duration::from_secs(10);
    while records < w.count {
        match tokio::time::timeout(idle, consumer.next()).await {
            Ok(Some(Ok(r))) => {
                records += 1;
                bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
                if records % 1024 == 0 {
                    progress.inc(1024);
                }
            }
            Ok(Some(Err(e))) => return Err(e).context("fetch"),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    records,
                    "no record for 10 s: the topic holds fewer than --count"
                );
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    let mut report = Report::new("sluice", "consume", records, bytes, elapsed);
    report.failed = w.count.saturating_sub(records);
    Ok(o.consume_settings(w, report)
        .setting("partitions", partitions.len()))
}

/// W3: sends at `w.rate` while a consumer tails the topic, and records each record's
/// send→receive latency from the stamp in its value (same host clock).
pub async fn e2e(w: &Workload, o: &SluiceOptions) -> Result<Report> {
    w.validate()?;
    let Some(rate) = w.rate else {
        bail!("e2e needs --rate (records per second), e.g. --rate 10000");
    };
    ensure_topic(w, o).await?;
    let mut consumer = Consumer::new(o.consumer_config(Duration::from_millis(500))).await?;
    let partitions = consumer.partitions_for(&w.topic).await?;
    consumer
        .assign(
            partitions.iter().map(|p| (w.topic.clone(), *p)).collect(),
            SeekTo::Latest,
        )
        .await?;
    let progress = Progress::new(w.count, "e2e", o.progress);
    let expected = w.count;
    let run_for = Duration::from_secs_f64(w.count as f64 / rate as f64);
    let reader = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut lat = LatencyRecorder::new();
            let mut got = 0u64;
            let deadline = tokio::time::Instant::now() + run_for + Duration::from_secs(15);
            while got < expected {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(Ok(r))) => {
                        let now = now_ns();
                        if let Some(stamp) = r.value.as_deref().and_then(read_stamp) {
                            lat.record_ns(now as i128 - stamp as i128);
                            got += 1;
                            progress.inc(1);
                        }
                    }
                    Ok(Some(Err(e))) => return Err(anyhow::Error::from(e).context("fetch")),
                    Ok(None) | Err(_) => break,
                }
            }
            Ok((got, lat))
        })
    };
    let producer = Producer::new(o.producer_config()).await?;
    let mut payloads = Payloads::new(w.record_size, w.key_size, 3);
    let start = tokio::time::Instant::now();
    let (tx, acker) = spawn_timed_acker();
    for i in 0..w.count {
        if let Some(due) = w.due(i).map(|d| start + d)
            && due > tokio::time::Instant::now()
        {
            tokio::time::sleep_until(due).await;
        }
        let stamp = now_ns();
        let value = payloads.stamped_value(stamp);
        let record = ProducerRecord::new(w.topic.clone(), value).key(payloads.key());
        let delivery = producer.send(record).await.context("send")?;
        if tx.send((stamp, delivery)).is_err() {
            bail!("the acknowledgement task stopped");
        }
    }
    drop(tx);
    let elapsed = start.elapsed();
    let (failed, acked) = acker.await?;
    let (got, lat) = reader.await??;
    progress.finish();
    let mut report = Report::new("sluice", "e2e", got, got * w.record_size as u64, elapsed);
    report.failed = failed + expected.saturating_sub(got);
    report.latency = Some(lat.summary());
    report.ack_latency = Some(acked.summary());
    Ok(o.settings(w, report).setting("rate", rate))
}
