//! Behaviour of one group, driven by model clients (see `test_support`).

use super::test_support::*;
use super::*;
use crate::assignor::test_support::parts;
use crate::{Partitions, TopicPartition};

fn three_on_twelve(assignor: &str) -> (Group, Vec<Client>, TopicPartitionCounts) {
    let mut g = group(assignor);
    let counts = topics(&[("t", 12)]);
    let mut clients = vec![Client::new(&["t"]); 3];
    converge(&mut g, &mut clients, 0, &counts);
    (g, clients, counts)
}

#[test]
fn three_members_on_twelve_partitions_get_four_each() {
    for assignor in crate::assignor::ASSIGNOR_NAMES {
        let (g, clients, _) = three_on_twelve(assignor);
        assert_eq!(sizes(&clients), [4, 4, 4], "{assignor}");
        let all: Partitions = clients.iter().flat_map(|c| c.owned.clone()).collect();
        assert_eq!(all, parts("t", &(0..12).collect::<Vec<_>>()));
        assert!(
            g.describe()
                .members
                .iter()
                .all(|m| m.member_epoch == g.group_epoch())
        );
    }
}

/// Every order of heartbeats of the four members (24 permutations) per round.
#[test]
fn fourth_member_gets_three_each_without_any_partition_owned_twice() {
    let orders: Vec<Vec<usize>> = permutations(&[0, 1, 2, 3]);
    for order in &orders {
        let (mut g, mut clients, counts) = three_on_twelve("sticky");
        let before: Vec<Partitions> = clients.iter().map(|c| c.owned.clone()).collect();
        clients.push(Client::new(&["t"]));
        for round in 0..6 {
            for &i in order {
                let _ = clients[i].heartbeat(&mut g, 10 + round, &counts, true);
                assert_no_double_ownership(&g, &clients);
            }
        }
        assert_eq!(sizes(&clients), [3, 3, 3, 3], "order {order:?}");
        for (c, before) in clients.iter().zip(&before) {
            assert!(c.owned.is_subset(before), "sticky moved more than needed");
        }
    }
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, &first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

#[test]
fn partition_moves_only_after_its_owner_reports_releasing_it() {
    let (mut g, mut clients, counts) = three_on_twelve("sticky");
    let mut newcomer = Client::new(&["t"]);
    newcomer.heartbeat(&mut g, 10, &counts, true).unwrap();
    assert!(newcomer.owned.is_empty(), "others still own everything");
    // First old member is told to give up a partition, but still reports owning it.
    let owned_before = clients[0].owned.clone();
    clients[0].heartbeat(&mut g, 20, &counts, true).unwrap();
    let revoked: Partitions = owned_before
        .difference(&clients[0].owned)
        .cloned()
        .collect();
    assert_eq!(revoked.len(), 1);
    newcomer.heartbeat(&mut g, 30, &counts, true).unwrap();
    assert!(
        newcomer.owned.is_disjoint(&revoked),
        "given before its release"
    );
    clients[0].heartbeat(&mut g, 40, &counts, true).unwrap(); // reports it released
    newcomer.heartbeat(&mut g, 50, &counts, true).unwrap();
    assert!(newcomer.owned.is_superset(&revoked));
}

#[test]
fn member_that_stops_heartbeating_is_expired_and_its_partitions_move() {
    let (mut g, mut clients, counts) = three_on_twelve("sticky");
    let silent = clients.pop().unwrap();
    for t in (100..=900).step_by(100) {
        converge(&mut g, &mut clients, t, &counts);
        assert!(g.expire(t).is_empty(), "expired too early at {t}");
    }
    assert_eq!(g.next_deadline_ms(), Some(u64::from(SESSION_MS)));
    let records = g.expire(u64::from(SESSION_MS));
    assert!(records.contains(&GroupRecord::MemberLeft {
        member_id: silent.member_id.clone(),
        member_epoch: silent.epoch,
    }));
    converge(&mut g, &mut clients, 1_000, &counts);
    assert_eq!(sizes(&clients), [6, 6]);
    assert!(clients.iter().any(|c| !c.owned.is_disjoint(&silent.owned)));
}

#[test]
fn zombie_cannot_commit() {
    let (mut g, mut clients, counts) = three_on_twelve("sticky");
    let zombie = clients[2].clone();
    assert_eq!(g.validate_commit(&zombie.member_id, zombie.epoch), Ok(()));
    // Paused past its session: removed, so it is unknown.
    for t in [500, 1_000] {
        converge(&mut g, &mut clients[..2], t, &counts);
    }
    g.expire(1_200);
    assert!(matches!(
        g.validate_commit(&zombie.member_id, zombie.epoch),
        Err(GroupError::UnknownMemberId { .. })
    ));
    // A member that moved on: its old epoch is fenced.
    let old_epoch = clients[0].epoch;
    converge(&mut g, &mut clients[..2], 1_300, &counts);
    assert!(clients[0].epoch > old_epoch);
    assert!(matches!(
        g.validate_commit(&clients[0].member_id, old_epoch),
        Err(GroupError::FencedMemberEpoch { .. })
    ));
    assert_eq!(
        g.validate_commit(&clients[0].member_id, clients[0].epoch),
        Ok(())
    );
    // The zombie's heartbeat tells it to rejoin.
    let mut zombie = zombie;
    let err = zombie.heartbeat(&mut g, 1_400, &counts, true).unwrap_err();
    assert!(matches!(err, GroupError::UnknownMemberId { .. }));
    assert!(zombie.owned.is_empty() && zombie.member_id.is_empty());
}

#[test]
fn replay_of_emitted_records_reproduces_the_group() {
    let mut g = group("sticky");
    let counts = topics(&[("t", 12)]);
    let mut records = Vec::new();
    let mut clients = vec![
        Client::new(&["t"]),
        Client::new(&["t"]).with_instance("i1"),
        Client::new(&["t"]),
    ];
    records.extend(converge(&mut g, &mut clients, 0, &counts));
    let mut late = Client::new(&["t"]);
    records.extend(late.heartbeat(&mut g, 10, &counts, true).unwrap());
    records.extend(clients[0].heartbeat(&mut g, 20, &counts, true).unwrap()); // mid-revocation
    records.extend(clients[1].leave(&mut g, 30, true));
    records.extend(clients[2].leave(&mut g, 40, false));
    for snapshot in [records.clone(), compact(&records)] {
        let r = replayed("sticky", 50, &snapshot);
        assert_eq!(r.describe(), g.describe());
    }
    // The replayed group carries on exactly like the original.
    let mut r = replayed("sticky", 50, &records);
    let mut r_late = late.clone();
    let a = late.heartbeat(&mut g, 60, &counts, true);
    let b = r_late.heartbeat(&mut r, 60, &counts, true);
    assert_eq!(a, b);
    assert_eq!(late.owned, r_late.owned);
}

#[test]
fn static_member_restart_keeps_its_partitions_without_a_rebalance() {
    let mut g = group("sticky");
    let counts = topics(&[("t", 12)]);
    let mut clients = vec![
        Client::new(&["t"]).with_instance("i0"),
        Client::new(&["t"]).with_instance("i1"),
        Client::new(&["t"]).with_instance("i2"),
    ];
    converge(&mut g, &mut clients, 0, &counts);
    let epoch = g.group_epoch();
    let kept = clients[1].owned.clone();
    let old_id = clients[1].member_id.clone();
    clients[1].leave(&mut g, 100, true);
    assert_eq!(g.group_epoch(), epoch, "a static leave does not rebalance");
    converge(&mut g, &mut clients[..1], 200, &counts);
    assert!(
        clients[0].owned.is_disjoint(&kept),
        "reserved for the successor"
    );
    clients[1].heartbeat(&mut g, 300, &counts, true).unwrap();
    assert_ne!(clients[1].member_id, old_id);
    assert_eq!(clients[1].owned, kept);
    assert_eq!(clients[1].epoch, epoch);
    assert_eq!(g.group_epoch(), epoch);
}

#[test]
fn static_instance_id_of_an_active_member_is_refused() {
    let mut g = group("range");
    let counts = topics(&[("t", 4)]);
    let mut first = Client::new(&["t"]).with_instance("i");
    first.heartbeat(&mut g, 0, &counts, true).unwrap();
    let mut second = Client::new(&["t"]).with_instance("i");
    let err = second.heartbeat(&mut g, 1, &counts, true).unwrap_err();
    assert!(matches!(err, GroupError::UnreleasedInstanceId { .. }));
}

#[test]
fn static_member_that_never_returns_is_expired_after_its_session() {
    let mut g = group("sticky");
    let counts = topics(&[("t", 4)]);
    let mut clients = vec![Client::new(&["t"]).with_instance("i0"), Client::new(&["t"])];
    converge(&mut g, &mut clients, 0, &counts);
    clients[0].leave(&mut g, 100, true);
    converge(&mut g, &mut clients[1..], 600, &counts);
    assert!(g.expire(1_099).is_empty());
    assert!(!g.expire(1_100).is_empty());
    converge(&mut g, &mut clients[1..], 1_100, &counts);
    assert_eq!(clients[1].owned.len(), 4);
}

#[test]
fn member_slow_to_revoke_is_removed_after_its_rebalance_timeout() {
    let (mut g, mut clients, counts) = three_on_twelve("sticky");
    let mut newcomer = Client::new(&["t"]);
    newcomer.heartbeat(&mut g, 10, &counts, true).unwrap();
    // clients[0] is told to revoke but its next heartbeats keep claiming the partition.
    let stubborn_owned = clients[0].owned.clone();
    clients[0].heartbeat(&mut g, 20, &counts, true).unwrap();
    let mut t = 20;
    while t < 20 + u64::from(REBALANCE_MS) {
        t += 500;
        clients[0].owned = stubborn_owned.clone();
        clients[0].heartbeat(&mut g, t, &counts, true).unwrap();
        converge(&mut g, &mut clients[1..], t, &counts);
        newcomer.heartbeat(&mut g, t, &counts, true).unwrap();
        g.expire(t);
    }
    let d = g.describe();
    assert!(
        d.members
            .iter()
            .all(|m| m.member_id != clients[0].member_id)
    );
}

#[test]
fn lost_response_is_forgiven_once_with_the_previous_epoch() {
    let (mut g, mut clients, counts) = three_on_twelve("sticky");
    let mut newcomer = Client::new(&["t"]);
    newcomer.heartbeat(&mut g, 10, &counts, true).unwrap();
    clients[0].heartbeat(&mut g, 20, &counts, true).unwrap(); // revoke one
    let epoch_seen = clients[0].epoch;
    clients[0].heartbeat(&mut g, 30, &counts, false).unwrap(); // advances; response lost
    // Commits need the current epoch: the client learns it from its next heartbeat.
    assert!(matches!(
        g.validate_commit(&clients[0].member_id, epoch_seen),
        Err(GroupError::FencedMemberEpoch { .. })
    ));
    clients[0].heartbeat(&mut g, 40, &counts, true).unwrap();
    assert_eq!(clients[0].epoch, g.group_epoch());
}

#[test]
fn stale_epoch_heartbeat_is_fenced_and_the_member_rejoins_clean() {
    let (mut g, mut clients, counts) = three_on_twelve("sticky");
    let mut stale = clients[0].clone();
    stale.epoch -= 1;
    stale.owned.insert(TopicPartition::new("t", 99));
    let err = stale.heartbeat(&mut g, 10, &counts, true).unwrap_err();
    assert!(matches!(err, GroupError::FencedMemberEpoch { .. }));
    assert!(stale.owned.is_empty() && stale.epoch == 0);
    stale.heartbeat(&mut g, 20, &counts, true).unwrap();
    clients[0] = stale;
    converge(&mut g, &mut clients, 30, &counts);
    assert_eq!(sizes(&clients), [4, 4, 4]);
}

#[test]
fn partition_count_change_bumps_the_epoch_and_spreads_new_partitions() {
    let (mut g, mut clients, _) = three_on_twelve("sticky");
    let epoch = g.group_epoch();
    let before: Vec<Partitions> = clients.iter().map(|c| c.owned.clone()).collect();
    converge(&mut g, &mut clients, 10, &topics(&[("t", 15)]));
    assert_eq!(g.group_epoch(), epoch + 1);
    assert_eq!(sizes(&clients), [5, 5, 5]);
    for (c, b) in clients.iter().zip(&before) {
        assert!(c.owned.is_superset(b));
    }
}

#[test]
fn leaving_member_rebalances_at_once() {
    let (mut g, mut clients, counts) = three_on_twelve("uniform");
    let epoch = g.group_epoch();
    let mut gone = clients.pop().unwrap();
    gone.leave(&mut g, 10, false);
    assert_eq!(g.group_epoch(), epoch + 1);
    converge(&mut g, &mut clients, 20, &counts);
    assert_eq!(sizes(&clients), [6, 6]);
}

#[test]
fn commit_without_a_member_is_allowed_only_in_an_empty_group() {
    let mut g = group("sticky");
    assert_eq!(g.validate_commit("", -1), Ok(()));
    let mut c = Client::new(&["t"]);
    c.heartbeat(&mut g, 0, &topics(&[("t", 1)]), true).unwrap();
    assert!(g.validate_commit("", -1).is_err());
}

#[test]
fn malformed_heartbeats_are_rejected() {
    let mut g = group("sticky");
    let counts = topics(&[("t", 1)]);
    let mut req = Client::new(&["t"]).request(3);
    assert!(matches!(
        g.heartbeat(0, req.clone(), &counts),
        Err(GroupError::InvalidRequest(_))
    ));
    req.member_id = "nobody".into();
    assert!(matches!(
        g.heartbeat(0, req.clone(), &counts),
        Err(GroupError::UnknownMemberId { .. })
    ));
    req.member_epoch = -3;
    assert!(matches!(
        g.heartbeat(0, req.clone(), &counts),
        Err(GroupError::InvalidRequest(_))
    ));
    req.member_epoch = 0;
    req.session_timeout_ms = 1;
    assert!(matches!(
        g.heartbeat(0, req, &counts),
        Err(GroupError::InvalidRequest(_))
    ));
    assert!(g.is_empty());
}

#[test]
fn member_changing_subscription_gets_the_new_topic() {
    let mut g = group("uniform");
    let counts = topics(&[("t", 2), ("u", 2)]);
    let mut clients = vec![Client::new(&["t"]), Client::new(&["t"])];
    converge(&mut g, &mut clients, 0, &counts);
    clients[1].topics = ["u".to_string()].into();
    converge(&mut g, &mut clients, 10, &counts);
    assert_eq!(clients[0].owned, parts("t", &[0, 1]));
    assert_eq!(clients[1].owned, parts("u", &[0, 1]));
}

#[test]
fn static_member_rejoining_under_its_own_id_resumes() {
    let mut g = group("sticky");
    let counts = topics(&[("t", 4)]);
    let mut clients = vec![Client::new(&["t"]).with_instance("i0"), Client::new(&["t"])];
    converge(&mut g, &mut clients, 0, &counts);
    let (id, kept, epoch) = (
        clients[0].member_id.clone(),
        clients[0].owned.clone(),
        g.group_epoch(),
    );
    clients[0].leave(&mut g, 10, true);
    clients[0].member_id = id;
    clients[0].heartbeat(&mut g, 20, &counts, true).unwrap();
    assert_eq!((clients[0].owned.clone(), g.group_epoch()), (kept, epoch));
}

#[test]
fn a_member_commits_only_partitions_it_holds() {
    let (g, clients, _counts) = three_on_twelve("uniform");
    let mine: Vec<TopicPartition> = clients[0].owned.iter().cloned().collect();
    let theirs: Vec<TopicPartition> = clients[1].owned.iter().cloned().collect();
    assert_eq!(
        g.validate_commit_partitions(&clients[0].member_id, &mine),
        Ok(())
    );
    assert!(matches!(
        g.validate_commit_partitions(&clients[0].member_id, &theirs[..1]),
        Err(GroupError::InvalidRequest(_))
    ));
    assert_eq!(
        g.validate_commit_partitions("", &theirs),
        Ok(()),
        "administrative commits are checked elsewhere"
    );
}
