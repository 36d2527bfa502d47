//! What a benchmark run sends: how many records, how big, how fast, over how many partitions.

use std::time::Duration;

use anyhow::{Result, bail};

/// The shape of one run, the same for every system under test.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Topic (Sluice), stream prefix (NATS) or key prefix (Redis) the run uses.
    pub topic: String,
    /// Records to send (produce) or read (consume); for `e2e`, `rate × duration`.
    pub count: u64,
    /// Bytes of each record's value (incompressible).
    pub record_size: usize,
    /// Bytes of each record's key (random, so records spread over partitions).
    pub key_size: usize,
    /// Partitions (Sluice), streams (NATS) or stream keys (Redis).
    pub partitions: u32,
    /// Fixed send rate in records per second; `None` sends as fast as acknowledgements allow.
    pub rate: Option<u64>,
}

impl Workload {
    /// Refuses shapes no run can complete, with what to change.
    pub fn validate(&self) -> Result<()> {
        if self.count == 0 {
            bail!("--count is 0: give the number of records to send, e.g. 1000000");
        }
        if self.record_size < 8 {
            bail!(
                "--record-size {} is too small: the latency stamp needs 8 bytes",
                self.record_size
            );
        }
        if self.record_size > 16 * 1024 * 1024 {
            bail!(
                "--record-size {} is above 16 MiB: use a smaller record",
                self.record_size
            );
        }
        if self.partitions == 0 {
            bail!("--partitions is 0: give at least 1");
        }
        if self.rate == Some(0) {
            bail!("--rate is 0: give records per second, or leave it out for full speed");
        }
        Ok(())
    }

    /// Payload bytes of the whole run (values only, as the MB/s count them).
    pub fn payload_bytes(&self) -> u64 {
        self.count * self.record_size as u64
    }

    /// When record `i` is due under a fixed rate, measured from the start of the run.
    pub fn due(&self, i: u64) -> Option<Duration> {
        self.rate
            .map(|r| Duration::from_nanos((i as u128 * 1_000_000_000 / r as u128) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Workload {
        Workload {
            topic: "t".into(),
            count: 10,
            record_size: 1024,
            key_size: 16,
            partitions: 8,
            rate: None,
        }
    }

    #[test]
    fn refuses_empty_and_tiny_runs() {
        assert!(w().validate().is_ok());
        assert!(Workload { count: 0, ..w() }.validate().is_err());
        assert!(
            Workload {
                record_size: 4,
                ..w()
            }
            .validate()
            .is_err()
        );
        assert!(
            Workload {
                partitions: 0,
                ..w()
            }
            .validate()
            .is_err()
        );
        assert!(
            Workload {
                rate: Some(0),
                ..w()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn fixed_rate_spaces_records_evenly() {
        let w = Workload {
            rate: Some(10_000),
            ..w()
        };
        assert_eq!(w.due(0), Some(Duration::ZERO));
        assert_eq!(w.due(10_000), Some(Duration::from_secs(1)));
        assert_eq!(w.due(5), Some(Duration::from_micros(500)));
        assert_eq!(self::w().due(5), None);
    }
}
