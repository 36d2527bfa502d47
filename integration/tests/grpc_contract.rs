//! The gRPC contract as clients in other languages meet it: Python (grpcio, stubs generated
//! from the shipped .proto files, errors read with grpcio-status) and Node.js (@grpc/grpc-js)
//! against a three-node cluster. Each script creates a topic, produces idempotently with a
//! retry that must not duplicate, fetches, uses a consumer group, reads every error's code and
//! `ErrorDetail` from the standard `google.rpc.Status` trailer, and (Python) lists each port's
//! services over reflection v1 and v1alpha. `scripts/test` installs both clients.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sluice_integration::{ClusterSpec, TestCluster};

fn polyglot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("polyglot")
}

/// Runs one language's contract script against the cluster and fails with its output.
fn run(program: &str, script: PathBuf, cluster: &TestCluster) {
    let coordinator = cluster.bootstrap()[0].clone();
    let out = Command::new(program)
        .arg(&script)
        .arg(&coordinator)
        .arg("3")
        .output()
        .unwrap_or_else(|e| panic!("running {program} {}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("PASS"),
        "{} failed (install its client with scripts/test):\n{text}\n{}",
        script.display(),
        cluster.log_tails(20)
    );
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start(ClusterSpec {
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .expect("cluster");
    cluster
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_meets_the_contract() {
    let cluster = cluster().await;
    let script = polyglot_dir().join("python").join("contract_test.py");
    tokio::task::block_in_place(|| run("python3", script, &cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_client_meets_the_contract() {
    let cluster = cluster().await;
    let script = polyglot_dir().join("node").join("contract_test.js");
    tokio::task::block_in_place(|| run("node", script, &cluster));
}
