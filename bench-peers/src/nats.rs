//! The three workloads against NATS JetStream. Partition `i` is stream `<topic>-<i>` bound to
//! subject `<topic>.<i>` (file storage). Producers publish with JetStream publish acknowledgements
//! in a bounded window; readers are ephemeral pull consumers without acks (like a Sluice fetch),
//! pulling `--fetch` messages per request with the next request pipelined.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{Context, ContextBuilder, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use sluice_bench::payload::{now_ns, read_stamp};
use sluice_bench::{LatencyRecorder, Payloads, Progress, Report, Workload};

use crate::common::{PeerOptions, Quota, Router, share};
use crate::window::{self, AckWindow, Outcome};

/// How long a reader waits for a message before deciding the streams hold fewer than `--count`.
const IDLE: Duration = Duration::from_secs(10);

/// Name of partition `i`'s stream.
pub fn stream_name(topic: &str, i: u32) -> String {
    format!("{topic}-{i}")
}

/// Subject of partition `i`'s stream.
pub fn subject(topic: &str, i: u32) -> String {
    format!("{topic}.{i}")
}

/// Refuses a prefix NATS cannot use in a stream name or subject token.
fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
        bail!("--topic {topic:?} cannot name a NATS stream: use letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Connects to the server, failing fast with what to check when it is not there.
async fn connect(url: &str) -> Result<Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        // A server that stays away fails the run in seconds instead of hanging it.
        .max_reconnects(10)
        .connect(url)
        .await
        .with_context(|| format!("cannot reach nats-server at {url}: is it running?"))
}

/// A JetStream context for a run whose [`AckWindow`] holds at most `window` acknowledgements.
///
/// The client has its own in-flight limit: a semaphore whose permit each acknowledgement future
/// holds until dropped. It must stay above the window, or `publish` waits for a permit that only
/// a settled future in the window (not polled while `publish` waits) would give back: a deadlock.
fn jetstream(client: Client, window: usize) -> Context {
    ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(window.max(1) * 2)
        .build(client)
}

/// Creates the run's streams when missing (deleting them first with `--fresh`) and returns the
/// config the server reports for the first one.
async fn ensure_streams(js: &Context, w: &Workload, o: &PeerOptions) -> Result<stream::Config> {
    let mut first = None;
    for i in 0..w.partitions {
        let name = stream_name(&w.topic, i);
        if o.fresh {
            match js.delete_stream(&name).await {
                Ok(_) => {}
                Err(e) if is_not_found(e.kind()) => {}
                Err(e) => return Err(e).with_context(|| format!("deleting stream {name}")),
            }
        }
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject(&w.topic, i)],
            storage: StorageType::File,
            num_replicas: o.replicas,
            ..Default::default()
        };
        let s = js.get_or_create_stream(config).await.with_context(|| {
            format!("creating stream {name} (is JetStream enabled: nats-server -js?)")
        })?;
        first.get_or_insert_with(|| s.cached_info().config.clone());
    }
    first.context("no partitions")
}

fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// The settings of a NATS report, durability first.
fn settings(
    w: &Workload,
    o: &PeerOptions,
    client: &Client,
    c: &stream::Config,
    r: Report,
) -> Report {
    o.base_settings(w, r)
        .setting("storage", format!("{:?}", c.storage).to_lowercase())
        .setting("replicas", c.num_replicas)
        .setting("ack", "jetstream publish ack")
        .setting(
            "fsync",
            "periodic (sync_interval, 2m default), not per message",
        )
        .setting("window", o.window)
        .setting("producers", o.producers)
        .setting("fetch", o.fetch)
        .setting(
            "server",
            format!("nats-server {}", client.server_info().version),
        )
}

/// Subjects of every partition, in partition order.
fn subjects(topic: &str, partitions: u32) -> Arc<Vec<Subject>> {
    Arc::new(
        (0..partitions)
            .map(|i| Subject::from(subject(topic, i)))
            .collect(),
    )
}

/// Publishes one value and hands back the future of its acknowledgement. `Err` means the client
/// could not even send it (connection gone for good): the caller stops rather than waiting out a
/// timeout for each remaining record.
async fn publish(
    js: &Context,
    subject: Subject,
    value: Bytes,
) -> Result<BoxFuture<'static, Outcome>, String> {
    let ack = js
        .publish(subject, value)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::pin(async move {
        match ack.await {
            Ok(_) => Outcome::acked(1),
            Err(e) => Outcome::failed(1, e),
        }
    }))
}

/// Counts `n` unsent records as failed for `why`.
fn unsent(n: u64, why: String) -> BoxFuture<'static, Outcome> {
    Box::pin(std::future::ready(Outcome::failed(n, why)))
}

/// W1: publishes `count` records as fast as acknowledgements allow; the clock runs from the
/// first publish to the last acknowledgement.
pub async fn produce(w: &Workload, o: &PeerOptions) -> Result<Report> {
    w.validate()?;
    check_topic(&w.topic)?;
    let admin = connect(&o.url).await?;
    let config = ensure_streams(&jetstream(admin.clone(), o.window), w, o).await?;
    let producers = o.producers.max(1);
    let mut contexts = Vec::with_capacity(producers);
    for _ in 0..producers {
        contexts.push(jetstream(connect(&o.url).await?, o.window));
    }
    let subjects = subjects(&w.topic, w.partitions);
    let progress = Progress::new(w.count, "produce", o.progress);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, js) in contexts.into_iter().enumerate() {
        let (w, subjects, progress) = (w.clone(), subjects.clone(), progress.clone());
        let (n, window) = (share(w.count, producers, i), o.window);
        tasks.push(tokio::spawn(async move {
            let mut payloads = Payloads::new(w.record_size, w.key_size, i as u64);
            let mut router = Router::new(w.partitions);
            let mut acks = AckWindow::new(window, Some(progress));
            for k in 0..n {
                let key = payloads.key();
                let s = subjects[router.route(&key)].clone();
                match publish(&js, s, payloads.value()).await {
                    Ok(ack) => acks.push(ack).await,
                    Err(e) => {
                        acks.push(unsent(n - k, e)).await;
                        break;
                    }
                }
            }
            acks.finish().await
        }));
    }
    let (acked, failed, end, why) = window::combine(tasks, start).await?;
    progress.finish();
    if let Some(e) = why {
        tracing::warn!(error = %e, failed, "some records were not acknowledged");
    }
    let mut report = Report::new(
        "nats",
        "produce",
        acked,
        acked * w.record_size as u64,
        end - start,
    );
    report.failed = failed;
    Ok(settings(w, o, &admin, &config, report))
}

/// An ephemeral pull consumer without acks on partition `i`, from `deliver`.
async fn reader(
    js: &Context,
    w: &Workload,
    i: u32,
    deliver: DeliverPolicy,
) -> Result<(PullConsumer, stream::Config, u64)> {
    let name = stream_name(&w.topic, i);
    let mut s = js.get_stream(&name).await.with_context(|| {
        format!("stream {name} not found: run `produce` first (same --topic, --partitions)")
    })?;
    let info = s
        .info()
        .await
        .with_context(|| format!("stream {name} info"))?;
    let (config, messages) = (info.config.clone(), info.state.messages);
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: deliver,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating a pull consumer on {name}"))?;
    Ok((consumer, config, messages))
}

/// Removes a run's ephemeral consumer now rather than after its inactivity threshold.
async fn drop_consumer(js: &Context, w: &Workload, i: u32, mut consumer: PullConsumer) {
    if let Ok(info) = consumer.info().await {
        let name = info.name.clone();
        if let Ok(s) = js.get_stream(stream_name(&w.topic, i)).await {
            let _ = s.delete_consumer(&name).await;
        }
    }
}

/// W2: reads `count` records from the start of every stream; the clock runs from the first pull
/// to the last record.
pub async fn consume(w: &Workload, o: &PeerOptions) -> Result<Report> {
    w.validate()?;
    check_topic(&w.topic)?;
    let client = connect(&o.url).await?;
    let js = jetstream(client.clone(), o.window);
    let mut readers = Vec::new();
    let mut config = None;
    for i in 0..w.partitions {
        let (consumer, c, messages) = reader(&js, w, i, DeliverPolicy::All).await?;
        config.get_or_insert(c);
        readers.push((i, consumer, messages));
    }
    let quota = Arc::new(Quota::new(w.count));
    let progress = Progress::new(w.count, "consume", o.progress);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, consumer, messages) in readers {
        let (quota, progress, fetch) = (quota.clone(), progress.clone(), o.fetch);
        quota.reader_started();
        tasks.push(tokio::spawn(async move {
            let read = if messages == 0 {
                Ok((0, 0, Instant::now()))
            } else {
                read_all(&consumer, fetch, &quota, &progress).await
            };
            quota.reader_done();
            (i, consumer, read)
        }));
    }
    let (mut records, mut bytes, mut end) = (0, 0, start);
    let mut first_error = None;
    for t in tasks {
        let (i, consumer, read) = t.await?;
        match read {
            Ok((n, b, last)) => {
                records += n;
                bytes += b;
                if n > 0 {
                    end = end.max(last);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        drop_consumer(&js, w, i, consumer).await;
    }
    progress.finish();
    if let Some(e) = first_error {
        return Err(e);
    }
    if records < w.count {
        tracing::warn!(records, "the streams hold fewer records than --count");
    }
    let mut report = Report::new("nats", "consume", records, bytes, end - start);
    report.failed = w.count.saturating_sub(records);
    let config = config.context("no partitions")?;
    Ok(settings(w, o, &client, &config, report))
}

/// One stream's share of W2: pulls until the stream is drained (the last message says nothing
/// is pending) or the run's quota is met. Returns (records, value bytes, time of the last one).
async fn read_all(
    consumer: &PullConsumer,
    fetch: usize,
    quota: &Quota,
    progress: &Progress,
) -> Result<(u64, u64, Instant)> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(fetch)
        .messages()
        .await
        .context("starting a pull")?;
    let (mut records, mut bytes, mut last) = (0u64, 0u64, Instant::now());
    while !quota.is_met() {
        let m = match tokio::time::timeout(IDLE, messages.next()).await {
            Ok(Some(m)) => m.context("pull")?,
            Ok(None) | Err(_) => break,
        };
        if quota.claim(1) == 0 {
            break;
        }
        records += 1;
        bytes += m.payload.len() as u64;
        last = Instant::now();
        if records % 1024 == 0 {
            progress.inc(1024);
        }
        if m.info().map(|i| i.pending == 0).unwrap_or(false) {
            break;
        }
    }
    progress.inc(records % 1024);
    Ok((records, bytes, last))
}

/// W3: publishes at `w.rate` while a consumer per stream tails it, and records each record's
/// publish→receive latency from the stamp in its value (same host clock).
pub async fn e2e(w: &Workload, o: &PeerOptions) -> Result<Report> {
    w.validate()?;
    check_topic(&w.topic)?;
    let Some(rate) = w.rate else {
        bail!("e2e needs --rate (records per second), e.g. --rate 10000");
    };
    let client = connect(&o.url).await?;
    let js = jetstream(client.clone(), o.window);
    let config = ensure_streams(&js, w, o).await?;
    let quota = Arc::new(Quota::new(w.count));
    let progress = Progress::new(w.count, "e2e", o.progress);
    let run_for = Duration::from_secs_f64(w.count as f64 / rate as f64);
    let deadline = tokio::time::Instant::now() + run_for + Duration::from_secs(15);
    let mut tails = Vec::new();
    for i in 0..w.partitions {
        let (consumer, _, _) = reader(&js, w, i, DeliverPolicy::New).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(o.fetch)
            .messages()
            .await
            .context("starting a pull")?;
        let (quota, progress) = (quota.clone(), progress.clone());
        quota.reader_started();
        tails.push(tokio::spawn(async move {
            let mut lat = LatencyRecorder::new();
            let mut got = 0u64;
            let out = loop {
                let next = tokio::select! {
                    () = quota.met() => break Ok(()),
                    r = tokio::time::timeout_at(deadline, messages.next()) => r,
                };
                let m = match next {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => break Err(anyhow::Error::from(e).context("pull")),
                    Ok(None) | Err(_) => break Ok(()),
                };
                let now = now_ns();
                if let Some(stamp) = read_stamp(&m.payload)
                    && quota.claim(1) == 1
                {
                    lat.record_ns(now as i128 - stamp as i128);
                    got += 1;
                    progress.inc(1);
                }
            };
            quota.reader_done();
            (i, consumer, out.map(|()| (got, lat)))
        }));
    }
    let subjects = subjects(&w.topic, w.partitions);
    let mut payloads = Payloads::new(w.record_size, w.key_size, 3);
    let mut router = Router::new(w.partitions);
    let mut acks = AckWindow::new(o.window, None);
    let start = tokio::time::Instant::now();
    for i in 0..w.count {
        if let Some(due) = w.due(i) {
            acks.idle_until(start + due).await;
        }
        let value = payloads.stamped_value(now_ns());
        let s = subjects[router.route(&payloads.key())].clone();
        match publish(&js, s, value).await {
            Ok(ack) => acks.push(ack).await,
            Err(e) => {
                acks.push(unsent(w.count - i, e)).await;
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let sent = acks.finish().await;
    let (mut got, mut lat, mut first_error) = (0, LatencyRecorder::new(), None);
    for t in tails {
        let (i, consumer, out) = t.await?;
        match out {
            Ok((n, l)) => {
                got += n;
                lat.merge(&l);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        drop_consumer(&js, w, i, consumer).await;
    }
    progress.finish();
    if let Some(e) = first_error {
        return Err(e);
    }
    if let Some(e) = &sent.first_error {
        tracing::warn!(error = %e, failed = sent.failed, "some records were not acknowledged");
    }
    let mut report = Report::new("nats", "e2e", got, got * w.record_size as u64, elapsed);
    report.failed = sent.failed + w.count.saturating_sub(got + sent.failed);
    report.latency = Some(lat.summary());
    Ok(settings(w, o, &client, &config, report).setting("rate", rate))
}
