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

#[test]
fn dev_cluster_tour_creates_produces_and_consumes_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (cport, nport) = (free_port().unwrap(), free_port().unwrap());
    let bootstrap = format!("127.0.0.1:{cport}");
    let dev = ManagedProcess::spawn(
        "dev",
        bin_path("sluice"),
        vec![
            "dev".into(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--coordinator".into(),
            bootstrap.clone(),
            "--node".into(),
            format!("127.0.0.1:{nport}"),
        ],
        dir.path().join("dev.log"),
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

    ok(sluice(
        &bootstrap,
        &["topic", "create", "greetings", "--partitions", "3"],
        None,
    ));
    assert!(ok(sluice(&bootstrap, &["topic", "list"], None)).contains("greetings"));
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

    let bad = sluice(&bootstrap, &["topic", "create", "__mine"], None);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("INVALID_TOPIC_NAME"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    drop(dev);
}
