//! `sluice dev` started as a user would, then the tour from the README, run with the built
//! binaries from a shell's point of view.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_integration::bin_path;
use sluice_integration::process::{ManagedProcess, free_port};

fn sluice(bootstrap: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin_path("sluice"))
        .args(args)
        .env("SLUICE_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sluice {args:?} did not finish: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Starts `sluice dev` on free ports and waits until its node is registered.
/// Returns the process, the coordinator's address and the Kafka listener's.
fn start_dev(dir: &std::path::Path) -> (ManagedProcess, String, String) {
    let (cport, nport) = (free_port().unwrap(), free_port().unwrap());
    let kafka = format!("127.0.0.1:{}", free_port().unwrap());
    let bootstrap = format!("127.0.0.1:{cport}");
    let dev = ManagedProcess::spawn(
        "dev",
        bin_path("sluice"),
        vec![
            "dev".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--coordinator".into(),
            bootstrap.clone(),
            "--node".into(),
            format!("127.0.0.1:{nport}"),
            "--kafka".into(),
            kafka.clone(),
        ],
        dir.join("dev.log"),
        cport,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = sluice(&bootstrap, &["cluster", "status"], None);
        if out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("127.0.0.1:{nport}"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sluice dev did not come up:\n{}",
            dev.tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (dev, bootstrap, kafka)
}

#[test]
fn dev_cluster_tour_creates_produces_and_consumes_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, bootstrap, kafka) = start_dev(dir.path());

    ok(sluice(
        &bootstrap,
        &["topic", "create", "greetings", "--partitions", "3"],
        None,
    ));
    assert!(ok(sluice(&bootstrap, &["topic", "list"], None)).contains("greetings"));
    kafka_metadata_lists_the_topic(&kafka);
    kafka_records_cross_to_sluice_and_back(&bootstrap, &kafka);
    let described = ok(sluice(
        &bootstrap,
        &["topic", "describe", "greetings"],
        None,
    ));
    assert!(described.contains("replication factor 1"), "{described}");

    let produced = sluice(
        &bootstrap,
        &["produce", "greetings", "--key-separator", ":"],
        Some("k1:hello\nk2:world\nk1:again\n"),
    );
    ok(produced);
    let consumed = ok(sluice(
        &bootstrap,
        &[
            "consume",
            "greetings",
            "--from-beginning",
            "--count",
            "3",
            "--format",
            "{key}={value}@{partition}",
        ],
        None,
    ));
    let mut lines: Vec<&str> = consumed.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{consumed}");
    let part = |l: &str| l.rsplit_once('@').map(|(_, p)| p.to_string()).unwrap();
    assert_eq!(lines[0].split('@').next(), Some("k1=again"));
    assert_eq!(lines[1].split('@').next(), Some("k1=hello"));
    assert_eq!(lines[2].split('@').next(), Some("k2=world"));
    assert_eq!(part(lines[0]), part(lines[1]), "same key, same partition");

    // Sizes and log starts from the leaders; delete-records moves a log start.
    let p = part(lines[0]);
    let deleted = ok(sluice(
        &bootstrap,
        &[
            "topic",
            "delete-records",
            "greetings",
            "--partition",
            &p,
            "--before",
            "1",
        ],
        None,
    ));
    assert!(deleted.contains("low watermark 1"), "{deleted}");
    let described = ok(sluice(
        &bootstrap,
        &["topic", "describe", "greetings"],
        None,
    ));
    assert!(
        described.contains("log start") && described.contains("size"),
        "{described}"
    );
    let cells_of = |l: &str| -> Vec<String> {
        l.split_whitespace()
            .filter(|c| *c != "│")
            .map(str::to_string)
            .collect()
    };
    let cells = described
        .lines()
        .map(cells_of)
        .find(|c| c.first() == Some(&p))
        .unwrap_or_else(|| panic!("no row for partition {p}: {described}"));
    let row = cells.join(" ");
    assert_eq!(
        (cells[5].as_str(), cells[6].as_str()),
        ("1", "2"),
        "log start and end: {row}"
    );
    let refused = sluice(
        &bootstrap,
        &[
            "topic",
            "delete-records",
            "greetings",
            "--partition",
            &p,
            "--before",
            "9",
        ],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("OFFSET_OUT_OF_RANGE"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Output into a pipe whose reader has gone (`| head`) ends the command quietly.
    let mut child = Command::new(bin_path("sluice"))
        .args(["topic", "describe", "greetings"])
        .env("SLUICE_BOOTSTRAP", &bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    drop(child.stdout.take());
    let closed = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(
        closed.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );

    cluster_settings_and_plans(&bootstrap, dir.path());

    let bad = sluice(&bootstrap, &["topic", "create", "__mine"], None);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("INVALID_TOPIC_NAME"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    drop(dev);
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(ok(out).trim()).expect("one JSON report")
}

#[test]
fn bench_workloads_report_what_they_sent_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, bootstrap, _) = start_dev(dir.path());
    let common = ["--topic", "bench", "--record-size", "200", "--json"];
    let mut args = vec!["bench", "produce", "--count", "3000", "--acks", "1"];
    args.extend(common);
    let produced = json(sluice(&bootstrap, &args, None));
    assert_eq!(produced["records"], 3000, "{produced}");
    assert_eq!(produced["failed"], 0, "{produced}");
    assert_eq!(produced["bytes"], 600_000, "{produced}");
    assert_eq!(produced["settings"]["acks"], "1");
    assert!(produced["mb_per_sec"].as_f64().unwrap() > 0.0);

    let mut args = vec!["bench", "consume", "--count", "3000"];
    args.extend(common);
    let consumed = json(sluice(&bootstrap, &args, None));
    assert_eq!(consumed["records"], 3000, "{consumed}");
    assert_eq!(consumed["settings"]["partitions"], "8");

    // Asking for more than the topic holds reports the shortfall as a failure.
    let mut args = vec!["bench", "consume", "--count", "3001"];
    args.extend(common);
    let short = sluice(&bootstrap, &args, None);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("1 of 3001 records failed"));

    let latency = json(sluice(
        &bootstrap,
        &[
            "bench",
            "e2e",
            "--topic",
            "tail",
            "--rate",
            "500",
            "--duration",
            "2",
            "--acks",
            "1",
            "--json",
        ],
        None,
    ));
    assert_eq!(latency["records"], 1000, "{latency}");
    assert_eq!(latency["latency"]["samples"], 1000, "{latency}");
    let p50 = latency["latency"]["p50_us"].as_f64().unwrap();
    let max = latency["latency"]["max_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{latency}");
    // Every acknowledged record is timed from its send to its acknowledgement too.
    assert_eq!(latency["ack_latency"]["samples"], 1000, "{latency}");
    assert!(
        latency["ack_latency"]["p50_us"].as_f64().unwrap() > 0.0,
        "{latency}"
    );

    for (bad, says) in [
        (
            vec!["bench", "produce", "--acks", "5"],
            "--acks 5 is invalid",
        ),
        (vec!["bench", "produce", "--count", "0"], "--count is 0"),
        (vec!["bench", "e2e", "--rate", "0"], "--rate is 0"),
        (
            vec!["bench", "produce", "--compression", "rar"],
            "--compression rar",
        ),
    ] {
        let out = sluice(&bootstrap, &bad, None);
        assert!(!out.status.success(), "{bad:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad:?}: {err}");
    }
    drop(dev);
}

/// `sluice cluster config`, a rebalance plan written to a file and started from it, and a
/// cancel with nothing to cancel, on the one-node dev cluster.
fn cluster_settings_and_plans(bootstrap: &str, dir: &std::path::Path) {
    let key = "reassignment.throttle.bytes.per.second";
    let shown = ok(sluice(bootstrap, &["cluster", "config"], None));
    assert!(shown.contains(key) && shown.contains("default"), "{shown}");
    let set = ok(sluice(
        bootstrap,
        &["cluster", "config", "--set", &format!("{key}=1048576")],
        None,
    ));
    let row = set.lines().find(|l| l.contains(key)).unwrap();
    assert!(row.contains("1048576") && row.contains("set"), "{set}");
    let bad = sluice(
        bootstrap,
        &["cluster", "config", "--set", "throttle=1"],
        None,
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("INVALID_CONFIG") && stderr.contains(key),
        "{stderr}"
    );

    let plan = dir.join("plan.json");
    let planned = ok(sluice(
        bootstrap,
        &[
            "cluster",
            "rebalance",
            "--dry-run",
            "--plan-out",
            plan.to_str().unwrap(),
        ],
        None,
    ));
    assert!(planned.contains("nothing to move"), "{planned}");
    let text = r#"{"version": 1, "partitions": [{"topic": "greetings", "partition": 0, "replicas": [0]}]}"#;
    std::fs::write(&plan, text).unwrap();
    let started = ok(sluice(
        bootstrap,
        &["topic", "reassign", "--plan", plan.to_str().unwrap()],
        None,
    ));
    assert!(
        started.contains("moves requested for 1 partition"),
        "{started}"
    );
    let empty = r#"{"version": 1, "partitions": []}"#;
    std::fs::write(&plan, empty).unwrap();
    let args = [
        "topic",
        "reassign",
        "--plan",
        plan.to_str().unwrap(),
        "--cancel",
    ];
    let refused = sluice(bootstrap, &args, None);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("names no partition"),
        "an empty plan cancels nothing"
    );
    std::fs::write(&plan, "{\"partitions\": 3}").unwrap();
    let bad = sluice(
        bootstrap,
        &["topic", "reassign", "--plan", plan.to_str().unwrap()],
        None,
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("expected"),
        "{stderr}"
    );
    let cancelled = ok(sluice(
        bootstrap,
        &[
            "topic",
            "reassign",
            "greetings",
            "--partition",
            "0",
            "--cancel",
        ],
        None,
    ));
    assert!(cancelled.contains("was moving"), "{cancelled}");
    let listed = ok(sluice(bootstrap, &["cluster", "reassignments"], None));
    assert!(listed.contains("no partition is moving"), "{listed}");
}

/// `kcat -L` (librdkafka) against the Kafka listener: the node is the one broker, at its
/// advertised Kafka address, and the topic has its three partitions, each led by node 0.
fn kafka_metadata_lists_the_topic(kafka: &str) {
    let out = Command::new("kcat")
        .args(["-b", kafka, "-L", "-J", "-t", "greetings", "-m", "10"])
        .output()
        .expect("kcat (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kcat -L failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = json(out);
    assert_eq!(md["brokers"][0]["id"], 0, "{md}");
    assert_eq!(md["brokers"][0]["name"], kafka, "{md}");
    let topic = &md["topics"][0];
    assert_eq!(topic["topic"], "greetings", "{md}");
    let partitions = topic["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3, "{md}");
    assert!(partitions.iter().all(|p| p["leader"] == 0), "{md}");
}

/// Records produced by kcat (keys, a header, lz4) are read by `sluice consume`, and kcat reads
/// them back from the Kafka listener with the same keys, values and header. A topic of its own,
/// so the tour's offsets stay as they are.
fn kafka_records_cross_to_sluice_and_back(bootstrap: &str, kafka: &str) {
    ok(sluice(
        bootstrap,
        &["topic", "create", "from-kafka", "--partitions", "1"],
        None,
    ));
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            kafka,
            "-P",
            "-t",
            "from-kafka",
            "-K:",
            "-z",
            "lz4",
            "-H",
            "h1=v1",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat");
    kcat.stdin
        .take()
        .unwrap()
        .write_all(b"k1:hello\nk2:world\n")
        .unwrap();
    let produced = kcat.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(
        produced.status.success() && !stderr.contains("failed"),
        "kcat -P: {stderr}"
    );
    let consumed = ok(sluice(
        bootstrap,
        &[
            "consume",
            "from-kafka",
            "--from-beginning",
            "--count",
            "2",
            "--format",
            "{offset} {key} {value}",
        ],
        None,
    ));
    assert_eq!(consumed.trim(), "0 k1 hello\n1 k2 world", "{consumed}");
    let back = Command::new("kcat")
        .args([
            "-b",
            kafka,
            "-C",
            "-t",
            "from-kafka",
            "-o",
            "beginning",
            "-e",
        ])
        .args(["-f", "%o %k %s %h\n"])
        .output()
        .unwrap();
    let back_text = String::from_utf8_lossy(&back.stdout);
    assert_eq!(
        back_text.trim(),
        "0 k1 hello h1=v1\n1 k2 world h1=v1",
        "kcat -C: {}",
        String::from_utf8_lossy(&back.stderr)
    );
}
