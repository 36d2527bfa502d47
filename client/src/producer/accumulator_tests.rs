use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::executor::block_on;
use sluice_proto::batch::{BatchBuilder, Compression, Record, decode_records};
use sluice_proto::pb::ErrorCode;

use super::*;
use crate::producer::DeliveryFuture;

const LINGER: Duration = Duration::from_millis(5);
const DELIVERY: Duration = Duration::from_secs(30);

fn acc(batch_size: usize) -> Accumulator {
    Accumulator::new(BatchSettings {
        batch_size,
        linger: LINGER,
        compression: Compression::None,
        delivery_timeout: DELIVERY,
    })
}

fn record(value: &str) -> Record {
    Record {
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![],
        timestamp_ms: 1_000,
    }
}

type Rx = DeliveryFuture;

/// Appends a record to an explicit partition, returning the sender-wake flag and the future.
fn put(acc: &mut Accumulator, partition: i32, value: &str, now: Instant) -> (bool, Rx) {
    let r = record(value);
    let size = BatchBuilder::record_size(&r);
    let (wake, ticket) = acc.append("t", partition, &r, size, None, || now);
    (wake, DeliveryFuture::new("t".into(), partition, ticket))
}

/// Chooses the partition as the producer does for a keyless record, then appends it.
fn put_keyless(acc: &mut Accumulator, partitions: i32, value: &str, now: Instant) -> i32 {
    let r = record(value);
    let size = BatchBuilder::record_size(&r);
    let p = acc.choose_partition("t", None, None, partitions, size);
    acc.append("t", p, &r, size, None, || now);
    p
}

fn ready_partitions(plan: &Plan) -> Vec<i32> {
    plan.ready.iter().map(|r| r.partition).collect()
}

#[test]
fn open_batch_waits_for_linger_then_becomes_ready() {
    let mut acc = acc(1 << 20);
    let t0 = Instant::now();
    let (wake, _rx) = put(&mut acc, 0, "a", t0);
    assert!(wake, "a new batch starts a linger timer");
    let (wake, _rx2) = put(&mut acc, 0, "b", t0);
    assert!(!wake, "appending to an open batch needs no wakeup");
    let plan = acc.plan(t0 + Duration::from_millis(1), false);
    assert!(plan.ready.is_empty());
    assert_eq!(plan.next_wakeup, Some(t0 + LINGER));
    let plan = acc.plan(t0 + LINGER, false);
    assert_eq!(ready_partitions(&plan), vec![0]);
    let batch = acc.drain("t", 0).unwrap();
    assert_eq!(batch.len(), 2);
}

#[test]
fn batch_reaching_batch_size_is_ready_before_linger() {
    let one = BatchBuilder::record_size(&record("0123456789"));
    // Room for the header and about three records.
    let mut acc = acc(61 + 3 * one);
    let t0 = Instant::now();
    let mut rxs = Vec::new();
    for _ in 0..7 {
        rxs.push(put(&mut acc, 0, "0123456789", t0).1);
    }
    let plan = acc.plan(t0, false);
    assert_eq!(
        ready_partitions(&plan),
        vec![0],
        "full batch goes without linger"
    );
    let first = acc.drain("t", 0).unwrap();
    assert!(first.len() >= 3, "batch holds as many records as fit");
    acc.complete("t", 0);
    let mut total = first.len();
    while let Some(b) = acc.drain("t", 0) {
        assert!(b.len() <= first.len());
        total += b.len();
        acc.complete("t", 0);
    }
    assert_eq!(total, 7);
}

#[test]
fn record_larger_than_batch_size_gets_a_batch_of_its_own() {
    let mut acc = acc(100);
    let t0 = Instant::now();
    let big = "x".repeat(500);
    put(&mut acc, 0, "small", t0);
    put(&mut acc, 0, &big, t0);
    put(&mut acc, 0, "small", t0);
    let sizes: Vec<usize> = std::iter::from_fn(|| {
        let b = acc.drain("t", 0);
        acc.complete("t", 0);
        b.map(|b| b.len())
    })
    .collect();
    assert_eq!(sizes, vec![1, 1, 1]);
}

#[test]
fn keyless_records_fill_one_partition_then_move_to_another() {
    let one = BatchBuilder::record_size(&record("v"));
    let mut acc = acc(61 + 4 * one);
    let t0 = Instant::now();
    let first = put_keyless(&mut acc, 6, "v", t0);
    let mut on_first = 1;
    loop {
        let next = put_keyless(&mut acc, 6, "v", t0);
        if next != first {
            break;
        }
        on_first += 1;
        assert!(
            on_first < 100,
            "sticky partition must switch once its batch is full"
        );
    }
    assert!(on_first >= 4, "the sticky batch is filled before switching");
    // The full batch on the first partition is ready at once and holds every record sent
    // there; the new one lingers.
    assert_eq!(ready_partitions(&acc.plan(t0, false)), vec![first]);
    assert_eq!(acc.drain("t", first).unwrap().len(), on_first);
}

#[test]
fn sending_a_lingered_batch_moves_keyless_records_elsewhere() {
    let mut acc = acc(1 << 20);
    let t0 = Instant::now();
    let p = put_keyless(&mut acc, 4, "a", t0);
    assert_eq!(put_keyless(&mut acc, 4, "b", t0), p);
    acc.drain("t", p).unwrap();
    assert_ne!(put_keyless(&mut acc, 4, "c", t0), p);
}

#[test]
fn keyed_and_explicit_partitions_ignore_stickiness() {
    let mut acc = acc(1 << 20);
    assert_eq!(
        acc.choose_partition("t", None, Some(b"foobar"), 10, 10),
        crate::partitioner::partition_for_key(b"foobar", 10)
    );
    assert_eq!(
        acc.choose_partition("t", Some(3), Some(b"foobar"), 10, 10),
        3
    );
}

#[test]
fn one_batch_in_flight_per_partition_and_retries_go_first() {
    let one = BatchBuilder::record_size(&record("v"));
    let mut acc = acc(61 + one);
    let t0 = Instant::now();
    for v in ["1", "2", "3"] {
        put(&mut acc, 0, v, t0);
    }
    put(&mut acc, 1, "other", t0);
    let first = acc.drain("t", 0).unwrap();
    let first_id = first.id;
    // Partition 0 has closed batches queued, but one is in flight.
    let plan = acc.plan(t0 + LINGER, false);
    assert_eq!(ready_partitions(&plan), vec![1]);
    assert!(acc.drain("t", 0).is_none());

    // The send fails retriably: the batch goes back in front and waits out its backoff.
    let backoff = Duration::from_millis(100);
    acc.requeue(first, t0 + backoff);
    let plan = acc.plan(t0 + LINGER, false);
    assert_eq!(
        ready_partitions(&plan),
        vec![1],
        "backoff blocks only its partition"
    );
    assert_eq!(plan.next_wakeup, Some(t0 + backoff));
    let plan = acc.plan(t0 + backoff, false);
    assert!(ready_partitions(&plan).contains(&0));
    let retried = acc.drain("t", 0).unwrap();
    assert_eq!(
        retried.id, first_id,
        "the retried batch is sent before later ones"
    );
    assert_eq!(retried.attempts, 2);
    acc.complete("t", 0);
    let ids: Vec<u64> = std::iter::from_fn(|| {
        let b = acc.drain("t", 0);
        acc.complete("t", 0);
        b.map(|b| b.id)
    })
    .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids.iter().all(|&id| id > first_id));
    assert_eq!(ids.len(), 2);
}

#[test]
fn ready_partitions_are_served_oldest_batch_first() {
    let mut acc = acc(1 << 20);
    let t0 = Instant::now();
    put(&mut acc, 2, "a", t0);
    put(&mut acc, 0, "b", t0 + Duration::from_millis(1));
    put(&mut acc, 1, "c", t0 + Duration::from_millis(2));
    let plan = acc.plan(t0 + Duration::from_secs(1), false);
    assert_eq!(ready_partitions(&plan), vec![2, 0, 1]);
}

#[test]
fn flush_sends_existing_batches_without_linger_and_tracks_them() {
    let mut acc = acc(1 << 20);
    let t0 = Instant::now();
    put(&mut acc, 0, "a", t0);
    let mark = acc.begin_flush();
    put(&mut acc, 1, "after flush", t0);
    let plan = acc.plan(t0, false);
    assert_eq!(
        ready_partitions(&plan),
        vec![0],
        "only batches from before the flush"
    );
    assert!(acc.pending_below(mark));
    let b = acc.drain("t", 0).unwrap();
    assert!(acc.pending_below(mark), "in flight still counts");
    acc.complete("t", 0);
    b.succeed(0, -1);
    assert!(!acc.pending_below(mark));
    assert!(!acc.is_empty());
    // Closing sends everything.
    assert_eq!(ready_partitions(&acc.plan(t0, true)), vec![1]);
}

#[test]
fn batches_waiting_past_delivery_timeout_expire_unless_in_flight() {
    let mut acc = acc(1 << 20);
    let t0 = Instant::now();
    let (_, rx0) = put(&mut acc, 0, "a", t0);
    put(&mut acc, 1, "b", t0);
    let in_flight = acc.drain("t", 1).unwrap();
    let plan = acc.plan(t0 + DELIVERY, false);
    assert_eq!(plan.expired.len(), 1);
    assert_eq!(plan.expired[0].partition, 0);
    for b in plan.expired {
        b.fail(&crate::ClientError::Timeout("delivery".into()));
    }
    assert!(matches!(block_on(rx0), Err(crate::ClientError::Timeout(_))));
    drop(in_flight);
}

#[test]
fn success_gives_consecutive_offsets_and_acks_zero_gives_minus_one() {
    let mut acc = acc(1 << 20);
    let t0 = Instant::now();
    let rxs: Vec<Rx> = (0..3)
        .map(|i| put(&mut acc, 0, &i.to_string(), t0).1)
        .collect();
    let mut b = acc.drain("t", 0).unwrap();
    let payload = b.payload().unwrap();
    assert_eq!(decode_records(&payload).unwrap().len(), 3);
    assert_eq!(
        b.payload().unwrap(),
        payload,
        "retries resend the same bytes"
    );
    b.succeed(40, -1);
    let offsets: Vec<i64> = rxs
        .into_iter()
        .map(|rx| block_on(rx).unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![40, 41, 42]);

    let (_, rx) = put(&mut acc, 0, "x", t0);
    acc.complete("t", 0);
    acc.drain("t", 0).unwrap().succeed(-1, 5_000);
    let md = block_on(rx).unwrap();
    assert_eq!((md.offset, md.timestamp_ms), (-1, 5_000));
    assert_eq!((md.topic.as_str(), md.partition), ("t", 0));

    let (_, rx) = put(&mut acc, 0, "y", t0);
    acc.complete("t", 0);
    let err = crate::ClientError::api(ErrorCode::BatchTooLarge, "too large");
    acc.drain("t", 0).unwrap().fail(&err);
    assert_eq!(
        block_on(rx).unwrap_err().code(),
        Some(ErrorCode::BatchTooLarge)
    );
}

/// The producer fields in a batch's encoded header.
fn producer_fields(batch: &mut ProducerBatch) -> (i64, i16, i32) {
    let header = sluice_proto::batch::validate(&batch.payload().unwrap()).unwrap();
    (
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
    )
}

#[test]
fn idempotent_batches_are_stamped_at_first_send_and_keep_their_stamp_on_retry() {
    let mut acc = acc(1 << 20);
    acc.set_identity(7, 3);
    let t0 = Instant::now();
    put(&mut acc, 0, "a", t0);
    put(&mut acc, 0, "b", t0);
    let mut first = acc.drain("t", 0).unwrap();
    assert_eq!(producer_fields(&mut first), (7, 3, 0));
    acc.requeue(first, t0);
    let mut retried = acc.drain("t", 0).unwrap();
    assert_eq!(producer_fields(&mut retried), (7, 3, 0), "same bytes");
    acc.complete("t", 0);
    put(&mut acc, 0, "c", t0);
    put(&mut acc, 1, "other partition", t0);
    assert_eq!(producer_fields(&mut acc.drain("t", 0).unwrap()), (7, 3, 2));
    assert_eq!(producer_fields(&mut acc.drain("t", 1).unwrap()), (7, 3, 0));
}

#[test]
fn batches_without_idempotence_carry_no_producer_fields() {
    let mut acc = acc(1 << 20);
    put(&mut acc, 0, "a", Instant::now());
    assert_eq!(
        producer_fields(&mut acc.drain("t", 0).unwrap()),
        (-1, -1, -1)
    );
    assert!(!acc.wants_identity());
}

#[test]
fn a_retry_expiring_with_unknown_outcome_holds_its_partition_until_a_new_identity() {
    let mut acc = acc(1 << 20);
    acc.set_identity(7, 0);
    let t0 = Instant::now();
    put(&mut acc, 0, "a", t0);
    let mut first = acc.drain("t", 0).unwrap();
    first.attempt_failed(&crate::ClientError::Transport("reset".into()));
    acc.requeue(first, t0 + Duration::from_millis(1));
    let later = t0 + DELIVERY - Duration::from_secs(1);
    put(&mut acc, 0, "b", later);
    put(&mut acc, 1, "c", later);

    let plan = acc.plan(t0 + DELIVERY, false);
    assert_eq!(plan.expired.len(), 1, "the retried batch ran out of time");
    assert!(acc.wants_identity());
    assert_eq!(
        ready_partitions(&plan),
        vec![1],
        "partition 0 waits for a new producer id; others go on"
    );
    assert_eq!(producer_fields(&mut acc.drain("t", 1).unwrap()), (7, 0, 0));

    acc.set_identity(8, 0);
    assert!(!acc.wants_identity());
    let plan = acc.plan(t0 + DELIVERY, false);
    assert_eq!(ready_partitions(&plan), vec![0]);
    assert_eq!(producer_fields(&mut acc.drain("t", 0).unwrap()), (8, 0, 0));
}

#[test]
fn a_final_refusal_before_the_append_rolls_the_sequence_back() {
    let mut acc = acc(1 << 20);
    acc.set_identity(7, 0);
    let t0 = Instant::now();
    put(&mut acc, 0, "a", t0);
    let mut first = acc.drain("t", 0).unwrap();
    let err = crate::ClientError::api(ErrorCode::BatchTooLarge, "too large");
    first.attempt_failed(&err);
    acc.fail(&first, &err);
    assert!(!acc.wants_identity());
    put(&mut acc, 0, "b", t0);
    assert_eq!(producer_fields(&mut acc.drain("t", 0).unwrap()), (7, 0, 0));
}
