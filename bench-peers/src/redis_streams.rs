//! The three workloads against Redis Streams. Partition `i` is stream key `<topic>:<i>`, whose
//! entries hold field `k` (the record key) and `v` (the value). Producers send pipelines of XADD
//! over multiplexed connections with a bounded number of pipelines in flight; W2 pages through
//! each stream with XRANGE, W3 tails all of them with one XREAD BLOCK loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult, Value};
use sluice_bench::payload::{now_ns, read_stamp};
use sluice_bench::{LatencyRecorder, Payloads, Progress, Report, Workload};

use crate::common::{PeerOptions, Quota, Router, share};
use crate::window::{self, AckWindow, Outcome};

/// How long one XREAD waits for new entries before the tail checks its deadline again.
const BLOCK_MS: u64 = 200;

/// Key of partition `i`'s stream.
pub fn stream_key(topic: &str, i: u32) -> String {
    format!("{topic}:{i}")
}

fn stream_keys(w: &Workload) -> Arc<Vec<String>> {
    Arc::new((0..w.partitions).map(|i| stream_key(&w.topic, i)).collect())
}

/// Connection timeouts: the client's 500 ms response default is shorter than a busy pipeline.
fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
}

/// A client for `url` and a first connection, failing fast with what to check.
async fn connect(url: &str) -> Result<(Client, MultiplexedConnection)> {
    let client = Client::open(url).with_context(|| format!("--url {url} is not a redis URL"))?;
    let conn = open(&client, url).await?;
    Ok((client, conn))
}

/// One more TCP connection to the server at `url`.
async fn open(client: &Client, url: &str) -> Result<MultiplexedConnection> {
    client
        .get_multiplexed_async_connection_with_config(&config())
        .await
        .with_context(|| format!("cannot reach redis-server at {url}: is it running?"))
}

/// The server's durability settings as it reports them: (appendonly, appendfsync, version).
async fn server_settings(conn: &mut MultiplexedConnection) -> (String, String, String) {
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let get = |k: &str| config.get(k).cloned().unwrap_or_else(|| "unknown".into());
    (get("appendonly"), get("appendfsync"), version)
}

/// The settings of a Redis report, durability first.
async fn settings(
    w: &Workload,
    o: &PeerOptions,
    conn: &mut MultiplexedConnection,
    r: Report,
) -> Report {
    let (appendonly, appendfsync, version) = server_settings(conn).await;
    o.base_settings(w, r)
        .setting("appendonly", appendonly)
        .setting("appendfsync", appendfsync)
        .setting("ack", "XADD reply")
        .setting("pipeline", o.pipeline)
        .setting("window", o.window)
        .setting("producers", o.producers)
        .setting("fetch", o.fetch)
        .setting("server", format!("redis {version}"))
}

/// Deletes the run's stream keys (`--fresh`).
async fn delete_streams(conn: &mut MultiplexedConnection, keys: &[String]) -> Result<()> {
    redis::cmd("DEL")
        .arg(keys)
        .query_async::<i64>(conn)
        .await
        .context("deleting the streams")?;
    Ok(())
}

/// Adds one XADD of `key`/`value` to stream `stream` to `pipe`.
fn xadd(pipe: &mut redis::Pipeline, stream: &str, key: &[u8], value: &[u8]) {
    let cmd = pipe.cmd("XADD").arg(stream).arg("*");
    if !key.is_empty() {
        cmd.arg("k").arg(key);
    }
    cmd.arg("v").arg(value);
}

/// Sends `pipe` of `n` XADDs and counts the entries the server stored.
fn send(
    mut pipe: redis::Pipeline,
    n: u64,
    mut conn: MultiplexedConnection,
) -> BoxFuture<'static, Outcome> {
    pipe.ignore_errors();
    Box::pin(async move {
        match pipe.query_async::<Vec<RedisResult<Value>>>(&mut conn).await {
            Ok(replies) => {
                let mut out = Outcome::acked(0);
                for r in replies {
                    match r {
                        Ok(_) => out.ok += 1,
                        Err(e) => {
                            out.failed += 1;
                            out.error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                out
            }
            Err(e) => Outcome::failed(n, e),
        }
    })
}

/// W1: sends `count` records in pipelined XADDs as fast as replies allow; the clock runs from
/// the first send to the last reply.
pub async fn produce(w: &Workload, o: &PeerOptions) -> Result<Report> {
    w.validate()?;
    let (client, mut admin) = connect(&o.url).await?;
    let keys = stream_keys(w);
    if o.fresh {
        delete_streams(&mut admin, &keys).await?;
    }
    let producers = o.producers.max(1);
    let mut conns = Vec::with_capacity(producers);
    for _ in 0..producers {
        conns.push(open(&client, &o.url).await?);
    }
    let pipeline = o.pipeline.max(1);
    let in_flight = (o.window / pipeline).max(1);
    let progress = Progress::new(w.count, "produce", o.progress);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (w, keys, progress) = (w.clone(), keys.clone(), progress.clone());
        let mut left = share(w.count, producers, i);
        tasks.push(tokio::spawn(async move {
            let mut payloads = Payloads::new(w.record_size, w.key_size, i as u64);
            let mut router = Router::new(w.partitions);
            let mut acks = AckWindow::new(in_flight, Some(progress));
            while left > 0 {
                let n = left.min(pipeline as u64);
                left -= n;
                let mut pipe = redis::pipe();
                for _ in 0..n {
                    let key = payloads.key();
                    xadd(
                        &mut pipe,
                        &keys[router.route(&key)],
                        &key,
                        &payloads.value(),
                    );
                }
                acks.push(send(pipe, n, conn.clone())).await;
            }
            acks.finish().await
        }));
    }
    let (acked, failed, end, why) = window::combine(tasks, start).await?;
    progress.finish();
    if let Some(e) = why {
        tracing::warn!(error = %e, failed, "some records were not stored");
    }
    let mut report = Report::new(
        "redis",
        "produce",
        acked,
        acked * w.record_size as u64,
        end - start,
    );
    report.failed = failed;
    Ok(settings(w, o, &mut admin, report).await)
}

/// One stream entry of an XRANGE or XREAD reply.
#[derive(Debug)]
struct Entry<'a> {
    id: &'a [u8],
    value: Option<&'a [u8]>,
}

fn bulk(v: &Value) -> Result<&[u8]> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => bail!("expected a string in a stream reply, got {other:?}"),
    }
}

/// The entries of an XRANGE reply (or of one stream of an XREAD reply).
fn entries(reply: &Value) -> Result<Vec<Entry<'_>>> {
    let items = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => bail!("unexpected stream reply (not an array)"),
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                bail!("unexpected stream entry (not an array)");
            };
            let [id, Value::Array(fields)] = parts.as_slice() else {
                bail!("unexpected stream entry shape");
            };
            let value = fields
                .chunks_exact(2)
                .find(|f| bulk(&f[0]).is_ok_and(|n| n == b"v"))
                .and_then(|f| bulk(&f[1]).ok());
            Ok(Entry {
                id: bulk(id)?,
                value,
            })
        })
        .collect()
}

/// W2: reads `count` records from the start of every stream; the clock runs from the first
/// XRANGE to the last record.
pub async fn consume(w: &Workload, o: &PeerOptions) -> Result<Report> {
    w.validate()?;
    let (client, mut admin) = connect(&o.url).await?;
    let keys = stream_keys(w);
    let mut conns = Vec::with_capacity(keys.len());
    for _ in 0..keys.len() {
        conns.push(open(&client, &o.url).await?);
    }
    let quota = Arc::new(Quota::new(w.count));
    let progress = Progress::new(w.count, "consume", o.progress);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (key, conn) in keys.iter().cloned().zip(conns) {
        let (quota, progress, fetch) = (quota.clone(), progress.clone(), o.fetch.max(1));
        quota.reader_started();
        tasks.push(tokio::spawn(async move {
            let read = read_all(conn, &key, fetch, &quota, &progress).await;
            quota.reader_done();
            read
        }));
    }
    let (mut records, mut bytes, mut end) = (0, 0, start);
    for t in tasks {
        let (n, b, last) = t.await??;
        records += n;
        bytes += b;
        if n > 0 {
            end = end.max(last);
        }
    }
    progress.finish();
    if records < w.count {
        tracing::warn!(records, "the streams hold fewer records than --count");
    }
    let mut report = Report::new("redis", "consume", records, bytes, end - start);
    report.failed = w.count.saturating_sub(records);
    Ok(settings(w, o, &mut admin, report).await)
}

/// One stream's share of W2: XRANGE pages of `fetch` entries until the stream ends or the run's
/// quota is met. Returns (records, value bytes, time of the last one).
async fn read_all(
    mut conn: MultiplexedConnection,
    key: &str,
    fetch: usize,
    quota: &Quota,
    progress: &Progress,
) -> Result<(u64, u64, Instant)> {
    let (mut records, mut bytes, mut last) = (0u64, 0u64, Instant::now());
    let mut from = "-".to_string();
    while !quota.is_met() {
        let reply: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(fetch)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("XRANGE {key}"))?;
        let page = entries(&reply)?;
        let Some(tail) = page.last() else { break };
        let got = quota.claim(page.len() as u64);
        bytes += page
            .iter()
            .take(got as usize)
            .map(|e| e.value.map_or(0, |v| v.len() as u64))
            .sum::<u64>();
        records += got;
        last = Instant::now();
        progress.inc(got);
        if (got as usize) < page.len() || page.len() < fetch {
            break;
        }
        from = format!("({}", String::from_utf8_lossy(tail.id));
    }
    Ok((records, bytes, last))
}

/// The id of the newest entry of every stream ("0-0" for an empty one), so a tail that starts
/// there sees exactly what the run adds.
async fn last_ids(conn: &mut MultiplexedConnection, keys: &[String]) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .with_context(|| format!("XREVRANGE {key}"))?;
        let id = entries(&reply)?.first().map_or_else(
            || "0-0".to_string(),
            |e| String::from_utf8_lossy(e.id).into_owned(),
        );
        ids.push(id);
    }
    Ok(ids)
}

/// Tails every stream with XREAD BLOCK from `ids` until `quota` is met or `deadline` passes;
/// returns (records, latencies).
async fn tail(
    mut conn: MultiplexedConnection,
    keys: Arc<Vec<String>>,
    mut ids: Vec<String>,
    fetch: usize,
    quota: Arc<Quota>,
    progress: Progress,
    deadline: tokio::time::Instant,
) -> Result<(u64, LatencyRecorder)> {
    let (mut got, mut lat) = (0u64, LatencyRecorder::new());
    while !quota.is_met() && tokio::time::Instant::now() < deadline {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(fetch)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&keys[..])
            .arg(&ids[..]);
        let read = cmd.query_async::<Value>(&mut conn);
        let reply = tokio::select! {
            () = quota.met() => break,
            r = read => r.context("XREAD")?,
        };
        let now = now_ns();
        let streams = match &reply {
            Value::Nil => continue,
            Value::Array(streams) => streams,
            _ => bail!("unexpected XREAD reply (not an array)"),
        };
        for s in streams {
            let Value::Array(pair) = s else {
                bail!("unexpected XREAD stream (not an array)");
            };
            let [name, items] = pair.as_slice() else {
                bail!("unexpected XREAD stream shape");
            };
            let name = bulk(name)?;
            let Some(i) = keys.iter().position(|k| k.as_bytes() == name) else {
                continue;
            };
            let page = entries(items)?;
            for e in &page {
                if let Some(stamp) = e.value.and_then(read_stamp)
                    && quota.claim(1) == 1
                {
                    lat.record_ns(now as i128 - stamp as i128);
                    got += 1;
                    progress.inc(1);
                }
            }
            if let Some(e) = page.last() {
                ids[i] = String::from_utf8_lossy(e.id).into_owned();
            }
        }
    }
    Ok((got, lat))
}

/// W3: sends one XADD at a time at `w.rate` while one XREAD BLOCK loop tails every stream, and
/// records each record's send→receive latency from the stamp in its value (same host clock).
pub async fn e2e(w: &Workload, o: &PeerOptions) -> Result<Report> {
    w.validate()?;
    let Some(rate) = w.rate else {
        bail!("e2e needs --rate (records per second), e.g. --rate 10000");
    };
    let (client, mut admin) = connect(&o.url).await?;
    let keys = stream_keys(w);
    if o.fresh {
        delete_streams(&mut admin, &keys).await?;
    }
    let ids = last_ids(&mut admin, &keys).await?;
    let quota = Arc::new(Quota::new(w.count));
    let progress = Progress::new(w.count, "e2e", o.progress);
    let run_for = Duration::from_secs_f64(w.count as f64 / rate as f64);
    let deadline = tokio::time::Instant::now() + run_for + Duration::from_secs(15);
    let reader = tokio::spawn(tail(
        open(&client, &o.url).await?,
        keys.clone(),
        ids,
        o.fetch.max(1),
        quota.clone(),
        progress.clone(),
        deadline,
    ));
    let conn = open(&client, &o.url).await?;
    let mut payloads = Payloads::new(w.record_size, w.key_size, 3);
    let mut router = Router::new(w.partitions);
    let mut acks = AckWindow::new(o.window, None);
    let start = tokio::time::Instant::now();
    for i in 0..w.count {
        if let Some(due) = w.due(i) {
            acks.idle_until(start + due).await;
        }
        let value = payloads.stamped_value(now_ns());
        let key = payloads.key();
        let mut pipe = redis::pipe();
        xadd(&mut pipe, &keys[router.route(&key)], &key, &value);
        acks.push(send(pipe, 1, conn.clone())).await;
    }
    let elapsed = start.elapsed();
    let sent = acks.finish().await;
    let (got, lat) = reader.await??;
    progress.finish();
    if let Some(e) = &sent.first_error {
        tracing::warn!(error = %e, failed = sent.failed, "some records were not stored");
    }
    let mut report = Report::new("redis", "e2e", got, got * w.record_size as u64, elapsed);
    report.failed = sent.failed + w.count.saturating_sub(got + sent.failed);
    report.latency = Some(lat.summary());
    Ok(settings(w, o, &mut admin, report)
        .await
        .setting("rate", rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &str) -> Value {
        Value::BulkString(b.as_bytes().to_vec())
    }

    #[test]
    fn parses_range_replies() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                s("1-0"),
                Value::Array(vec![s("k"), s("key"), s("v"), s("val")]),
            ]),
            Value::Array(vec![s("1-1"), Value::Array(vec![s("v"), s("x")])]),
        ]);
        let e = entries(&reply).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].id, b"1-0");
        assert_eq!(e[0].value, Some(&b"val"[..]));
        assert_eq!(e[1].value, Some(&b"x"[..]));
        assert!(entries(&Value::Nil).unwrap().is_empty());
        assert!(entries(&Value::Int(3)).is_err());
    }
}
