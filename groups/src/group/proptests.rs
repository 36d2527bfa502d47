//! Random histories of a group: joins, heartbeats (some responses lost), leaves (dynamic and
//! static), crashes, subscription and partition-count changes, time passing. After every step
//! no partition may be held by two members; at the end every live client converges, and
//! replaying the records (full or compacted) reproduces the group.

use proptest::prelude::*;

use super::test_support::*;
use super::*;

#[derive(Debug, Clone)]
enum Step {
    /// Heartbeat (or join); `deliver` false loses the response.
    Heartbeat { client: usize, deliver: bool },
    /// Leave with -1, or -2 if `is_static` and the client has an instance id.
    Leave { client: usize, is_static: bool },
    /// The client process dies without a word and restarts with no memory.
    Crash { client: usize },
    /// The client changes its subscription.
    Resubscribe {
        client: usize,
        topics: Vec<&'static str>,
    },
    /// Topic `a` changes its partition count.
    Resize { partitions: i32 },
    /// Time passes and the coordinator expires sessions.
    Advance { ms: u64 },
}

const CLIENTS: usize = 5;

fn step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS;
    let topics = proptest::sample::subsequence(vec!["a", "b"], 0..=2);
    prop_oneof![
        8 => (client.clone(), proptest::bool::weighted(0.85))
            .prop_map(|(client, deliver)| Step::Heartbeat { client, deliver }),
        1 => (client.clone(), any::<bool>()).prop_map(|(client, is_static)| Step::Leave { client, is_static }),
        1 => client.clone().prop_map(|client| Step::Crash { client }),
        1 => (client, topics).prop_map(|(client, topics)| Step::Resubscribe { client, topics }),
        1 => (1..=8i32).prop_map(|partitions| Step::Resize { partitions }),
        3 => (0..700u64).prop_map(|ms| Step::Advance { ms }),
    ]
}

struct World {
    group: Group,
    clients: Vec<Client>,
    /// Whether each client wants to be in the group (false after it left).
    active: Vec<bool>,
    counts: TopicPartitionCounts,
    now: u64,
    records: Vec<GroupRecord>,
}

impl World {
    fn new(assignor: &str) -> Self {
        let clients = (0..CLIENTS)
            .map(|i| {
                let c = Client::new(&["a", "b"]);
                if i < 2 {
                    c.with_instance(&format!("i{i}"))
                } else {
                    c
                }
            })
            .collect();
        Self {
            group: group(assignor),
            clients,
            active: vec![false; CLIENTS],
            counts: topics(&[("a", 4), ("b", 3)]),
            now: 0,
            records: Vec::new(),
        }
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Heartbeat { client, deliver } => {
                self.active[client] = true;
                let c = &mut self.clients[client];
                if let Ok(records) = c.heartbeat(&mut self.group, self.now, &self.counts, deliver) {
                    self.records.extend(records);
                }
            }
            Step::Leave { client, is_static } => {
                self.active[client] = false;
                let records = self.clients[client].leave(&mut self.group, self.now, is_static);
                self.records.extend(records);
            }
            Step::Crash { client } => {
                let c = &mut self.clients[client];
                c.member_id.clear();
                c.owned.clear();
                c.epoch = JOIN_EPOCH;
            }
            Step::Resubscribe { client, ref topics } => {
                self.clients[client].topics = topics.iter().map(|t| t.to_string()).collect();
            }
            Step::Resize { partitions } => {
                self.counts.insert("a".into(), partitions);
            }
            Step::Advance { ms } => {
                self.now += ms;
                self.records.extend(self.group.expire(self.now));
            }
        }
    }

    /// Live clients heartbeat every 100 ms for four sessions: ghosts and static leavers
    /// expire, everyone else must settle on the target.
    fn settle(&mut self) {
        for _ in 0..40 {
            for i in 0..CLIENTS {
                if self.active[i] {
                    self.apply(&Step::Heartbeat {
                        client: i,
                        deliver: true,
                    });
                    assert_no_double_ownership(&self.group, &self.clients);
                }
            }
            self.apply(&Step::Advance { ms: 100 });
        }
    }
}

fn check_history(assignor: &str, steps: &[Step]) {
    let mut w = World::new(assignor);
    for step in steps {
        w.apply(step);
        assert_no_double_ownership(&w.group, &w.clients);
    }
    for snapshot in [w.records.clone(), compact(&w.records)] {
        let replayed = replayed(assignor, w.now, &snapshot);
        assert_eq!(replayed.describe(), w.group.describe());
    }
    w.settle();
    let d = w.group.describe();
    assert!(
        matches!(d.state, GroupState::Stable | GroupState::Empty),
        "{d:#?}"
    );
    assert_eq!(
        d.members.len(),
        w.active.iter().filter(|a| **a).count(),
        "{d:#?}"
    );
    let owned: usize = w.clients.iter().map(|c| c.owned.len()).sum();
    let subscribed: usize = d
        .topics
        .values()
        .map(|n| usize::try_from(*n).unwrap_or(0))
        .sum();
    assert_eq!(
        owned, subscribed,
        "every subscribed partition is owned: {d:#?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_partition_is_ever_held_by_two_members_sticky(steps in proptest::collection::vec(step(), 1..80)) {
        check_history("sticky", &steps);
    }

    #[test]
    fn no_partition_is_ever_held_by_two_members_uniform(steps in proptest::collection::vec(step(), 1..80)) {
        check_history("uniform", &steps);
    }

    #[test]
    fn no_partition_is_ever_held_by_two_members_range(steps in proptest::collection::vec(step(), 1..80)) {
        check_history("range", &steps);
    }
}
