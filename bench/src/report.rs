//! The result of one run: what was measured, under which settings, printed as a table for people
//! or one JSON object per line for the comparison script.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::latency::LatencySummary;

/// One run's figures. Throughput counts acknowledged (produce) or received (consume) records
/// only; MB are 10^6 bytes of record values.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// System under test: `sluice`, `nats` or `redis`.
    pub system: String,
    /// `produce`, `consume` or `e2e`.
    pub workload: String,
    /// Records acknowledged (produce), received (consume, e2e).
    pub records: u64,
    /// Records that failed for good (produce) or were never received before the deadline (e2e).
    pub failed: u64,
    /// Value bytes of `records`.
    pub bytes: u64,
    /// From the first send (or first fetch) to the last acknowledgement (or last record).
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// `bytes / seconds / 10^6`.
    pub mb_per_sec: f64,
    /// Send→receive latency (e2e only).
    pub latency: Option<LatencySummary>,
    /// Send→acknowledgement latency (Sluice e2e): set beside `latency`, it tells how much of a
    /// record's trip is the produce request and how much the delivery to the consumer.
    pub ack_latency: Option<LatencySummary>,
    /// Every knob that shaped the run (acks, partitions, record size, fsync, ...).
    pub settings: BTreeMap<String, String>,
}

impl Report {
    /// A throughput report; `latency` is filled in by e2e runs.
    pub fn new(system: &str, workload: &str, records: u64, bytes: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            system: system.to_string(),
            workload: workload.to_string(),
            records,
            failed: 0,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mb_per_sec: bytes as f64 / seconds / 1e6,
            latency: None,
            ack_latency: None,
            settings: BTreeMap::new(),
        }
    }

    /// Adds a setting shown beside the figures.
    pub fn setting(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.insert(key.to_string(), value.to_string());
        self
    }

    /// Prints the report: one JSON line, or a table.
    pub fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            );
        } else {
            println!("{}", self.table());
        }
    }

    /// The human-readable summary table.
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(vec![
            format!("{} {}", self.system, self.workload),
            String::new(),
        ]);
        t.add_row(vec!["records".to_string(), self.records.to_string()]);
        if self.failed > 0 {
            t.add_row(vec!["failed".to_string(), self.failed.to_string()]);
        }
        t.add_row(vec!["seconds".to_string(), format!("{:.3}", self.seconds)]);
        t.add_row(vec![
            "records/s".to_string(),
            format!("{:.0}", self.records_per_sec),
        ]);
        t.add_row(vec!["MB/s".to_string(), format!("{:.1}", self.mb_per_sec)]);
        for (name, summary) in [
            ("latency", &self.latency),
            ("ack latency", &self.ack_latency),
        ] {
            let Some(l) = summary else { continue };
            for (k, v) in [
                ("p50", l.p50_us),
                ("p99", l.p99_us),
                ("p99.9", l.p999_us),
                ("max", l.max_us),
            ] {
                t.add_row(vec![format!("{name} {k}"), format!("{:.3} ms", v / 1000.0)]);
            }
        }
        for (k, v) in &self.settings {
            t.add_row(vec![k.clone(), v.clone()]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_from_counts_and_time() {
        let r = Report::new(
            "sluice",
            "produce",
            1000,
            1_024_000,
            Duration::from_millis(500),
        )
        .setting("acks", "all");
        assert!((r.records_per_sec - 2000.0).abs() < 1e-6);
        assert!((r.mb_per_sec - 2.048).abs() < 1e-9);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["settings"]["acks"], "all");
        assert_eq!(json["workload"], "produce");
        assert!(r.table().to_string().contains("records/s"));
        assert!(json["ack_latency"].is_null());
    }

    #[test]
    fn both_latencies_are_shown_when_measured() {
        let mut lat = crate::latency::LatencyRecorder::new();
        lat.record_ns(2_000_000);
        let mut r = Report::new("sluice", "e2e", 1, 1024, Duration::from_secs(1));
        r.latency = Some(lat.summary());
        r.ack_latency = Some(lat.summary());
        let table = r.table().to_string();
        assert!(
            table.contains("latency p99") && table.contains("ack latency p99"),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ack_latency"]["samples"], 1);
    }
}
