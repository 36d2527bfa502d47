//! The balancer's planning time on a large cluster of 12 nodes: 10,000 partitions at RF 3
//! spread evenly over 11 nodes when a twelfth joins (it receives a twelfth of the replicas and
//! of the preferred leaders: 2,500 moves), and the same partitions all on 3 nodes when 9 join
//! (22,500 moves).
//!
//! `cargo bench -p sluice-coordinator --bench balance`

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_coordinator::balance;

fn nodes(n: i32) -> BTreeMap<i32, String> {
    (0..n).map(|i| (i, format!("rack-{}", i % 3))).collect()
}

fn spread(partitions: usize, over: i32) -> Vec<Vec<i32>> {
    (0..partitions)
        .map(|p| {
            let a = (p as i32) % over;
            vec![a, (a + 1) % over, (a + 2) % over]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance_plan");
    g.sample_size(10);
    let joined = spread(10_000, 11);
    for (name, parts) in [("joined", &joined), ("crowded", &spread(10_000, 3))] {
        let plan = balance::plan(parts, &nodes(12));
        let moved: usize = plan
            .iter()
            .map(|(i, l)| l.iter().filter(|n| !parts[*i].contains(n)).count())
            .sum();
        println!("{name}: {} lists change, {moved} replicas move", plan.len());
    }
    g.bench_function("10k_partitions_11_nodes_plus_1", |b| {
        b.iter(|| black_box(balance::plan(black_box(&joined), &nodes(12))))
    });
    let crowded = spread(10_000, 3);
    g.bench_function("10k_partitions_3_nodes_plus_9", |b| {
        b.iter(|| black_box(balance::plan(black_box(&crowded), &nodes(12))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
