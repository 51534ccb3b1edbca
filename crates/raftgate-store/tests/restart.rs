//! The state machine survives a reopen, and installing a snapshot replaces (not merges) the state.

use std::io::Cursor;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raftgate_model::{Command, ConsumerSpec, Proposal, Spec};
use raftgate_store::TypeConfig;

fn put_consumer(index: u64, name: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(vec![Proposal {
            request_id: index as u128,
            at_ms: 1000 + index,
            command: Command::Put {
                name: name.into(),
                spec: Box::new(Spec::Consumer(ConsumerSpec::default())),
                if_version: None,
            },
            actor: None,
        }]),
    }
}

#[tokio::test]
async fn reopen_keeps_state_and_snapshot_install_replaces_it() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();

    // The "leader" applies a, b; snapshots.
    let (_, mut leader) = raftgate_store::open(leader_dir.path()).unwrap();
    leader
        .apply([put_consumer(1, "a"), put_consumer(2, "b")])
        .await
        .unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    // The "follower" has a stale resource the leader never had (deleted there long ago).
    let (_, mut follower) = raftgate_store::open(follower_dir.path()).unwrap();
    follower.apply([put_consumer(1, "stale")]).await.unwrap();
    follower
        .install_snapshot(
            &snapshot.meta,
            Box::new(Cursor::new(snapshot.snapshot.into_inner())),
        )
        .await
        .unwrap();
    let state = follower.subscribe().borrow().clone();
    assert_eq!(state.consumers.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(state.applied_index, 2);
    drop(follower);

    // Reopened from disk, it has exactly the installed state and the snapshot.
    let (_, mut reopened) = raftgate_store::open(follower_dir.path()).unwrap();
    let state = reopened.subscribe().borrow().clone();
    assert_eq!(state.consumers.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(state.consumers["b"].version, 2);
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
    assert!(reopened.get_current_snapshot().await.unwrap().is_some());

    // A retried proposal (same request id) is not applied twice, even after the reopen.
    let mut again = put_consumer(3, "c");
    if let EntryPayload::Normal(batch) = &mut again.payload {
        batch[0].request_id = 2;
    }
    let results = reopened.apply([again]).await.unwrap();
    assert_eq!(
        results[0][0].as_ref().unwrap().index,
        2,
        "the first outcome is returned"
    );
    assert!(!reopened.subscribe().borrow().consumers.contains_key("c"));
}
