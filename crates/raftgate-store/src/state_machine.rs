//! The Raft state machine: applies committed proposals to the replicated [`State`], keeps it in
//! sled, and publishes each new state to the proxy and the admin API.
//!
//! Layout of the `state_machine` tree, written with one atomic sled batch per `apply` call:
//! - `[1, kind] + name` → the resource's [`Entity`], codec-encoded;
//! - `[2] + request id` → the outcome of a recent proposal, so a retried write is applied once;
//! - `[3] + "applied"` / `"membership"` → the last applied log id and membership.
//!
//! Applying does not sync: everything applied is also in the (synced) log until a snapshot covers
//! it, and the log is only purged after a sync (see [`crate::log_store`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use raftgate_model::codec;
use raftgate_model::command::Applied;
use raftgate_model::state::{Resource, Table};
use raftgate_model::{
    CertificateSpec, ConsumerSpec, InstanceSpec, Kind, Outcome, RateLimitSpec, RouteSpec,
    ServiceSpec, State, StoredKey,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::StoreError;
use crate::apply::{Dirty, apply};
use crate::durable::Durable;
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// How many recent request ids are remembered for de-duplication of retried writes.
pub const RECENT_REQUESTS: usize = 10_000;

const ENTITY: u8 = 1;
const REQUEST: u8 = 2;
const META_APPLIED: &[u8] = b"\x03applied";
const META_MEMBERSHIP: &[u8] = b"\x03membership";
const SNAPSHOT: &[u8] = b"current";

fn kind_tag(kind: Kind) -> u8 {
    match kind {
        Kind::Service => 1,
        Kind::Route => 2,
        Kind::Consumer => 3,
        Kind::RateLimit => 4,
        Kind::Key => 5,
        Kind::Instance => 6,
        Kind::Certificate => 7,
    }
}

fn entity_key(kind: Kind, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len());
    k.extend_from_slice(&[ENTITY, kind_tag(kind)]);
    k.extend_from_slice(name.as_bytes());
    k
}

fn request_key(id: u128) -> [u8; 17] {
    let mut k = [REQUEST; 17];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Outcomes of recent proposals by request id, oldest dropped first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Recent {
    by_id: BTreeMap<u128, (u64, Applied)>,
    by_index: BTreeMap<u64, u128>,
}

impl Recent {
    fn get(&self, id: u128) -> Option<&Applied> {
        self.by_id.get(&id).map(|(_, a)| a)
    }

    /// Records an outcome; returns the ids that fell out of the window.
    fn insert(&mut self, id: u128, index: u64, applied: Applied) -> Vec<u128> {
        self.by_id.insert(id, (index, applied));
        self.by_index.insert(index, id);
        let mut dropped = Vec::new();
        while self.by_index.len() > RECENT_REQUESTS {
            if let Some((_, old)) = self.by_index.pop_first() {
                self.by_id.remove(&old);
                dropped.push(old);
            }
        }
        dropped
    }
}

/// Everything a snapshot must carry besides the Raft metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    state: State,
    recent: Recent,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The state machine store of one node.
pub struct StateMachineStore {
    db: Durable,
    tree: sled::Tree,
    snapshots: sled::Tree,
    machine: Machine,
    published: watch::Sender<Arc<State>>,
}

fn sm_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(e)).into()
}

fn snap_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(e)).into()
}

fn load_table<R: Resource>(tree: &sled::Tree, db: &Durable) -> Result<Table<R>, StoreError> {
    let mut table = raftgate_model::state::Table::<R>::default();
    for item in tree.scan_prefix([ENTITY, kind_tag(R::KIND)]) {
        let (_, bytes) = item.map_err(|e| db.sled_err(e))?;
        let entity: raftgate_model::Entity<R> = decode(db, &bytes)?;
        Arc::make_mut(&mut table).insert(entity.name.clone(), entity);
    }
    Ok(table)
}

fn decode<T: serde::de::DeserializeOwned>(db: &Durable, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Codec {
        path: db.path().to_string(),
        source,
    })
}

impl StateMachineStore {
    /// Loads the state machine from `db`, repairing it from the stored snapshot if a crash
    /// interrupted a snapshot installation.
    pub fn new(db: Durable) -> Result<Self, StoreError> {
        let tree = db.tree("state_machine")?;
        let snapshots = db.tree("snapshots")?;
        let mut machine = Machine {
            state: State {
                services: load_table::<ServiceSpec>(&tree, &db)?,
                routes: load_table::<RouteSpec>(&tree, &db)?,
                consumers: load_table::<ConsumerSpec>(&tree, &db)?,
                rate_limits: load_table::<RateLimitSpec>(&tree, &db)?,
                keys: load_table::<StoredKey>(&tree, &db)?,
                instances: load_table::<InstanceSpec>(&tree, &db)?,
                certificates: load_table::<CertificateSpec>(&tree, &db)?,
                applied_index: 0,
            },
            ..Machine::default()
        };
        if let Some(b) = tree.get(META_APPLIED).map_err(|e| db.sled_err(e))? {
            machine.last_applied = decode(&db, &b)?;
        }
        if let Some(b) = tree.get(META_MEMBERSHIP).map_err(|e| db.sled_err(e))? {
            machine.membership = decode(&db, &b)?;
        }
        for item in tree.scan_prefix([REQUEST]) {
            let (k, v) = item.map_err(|e| db.sled_err(e))?;
            let mut id = [0u8; 16];
            if k.len() == 17 {
                id.copy_from_slice(&k[1..]);
            }
            let (index, applied): (u64, Applied) = decode(&db, &v)?;
            machine
                .recent
                .insert(u128::from_be_bytes(id), index, applied);
        }
        machine.state.applied_index = machine.last_applied.map_or(0, |l| l.index);
        let (published, _) = watch::channel(Arc::new(machine.state.clone()));
        let mut store = Self {
            db,
            tree,
            snapshots,
            machine,
            published,
        };
        if let Some((meta, data)) = store.read_snapshot()?
            && meta.last_log_id > store.machine.last_applied
        {
            tracing::warn!(snapshot = ?meta.last_log_id, applied = ?store.machine.last_applied,
                "state machine is behind its stored snapshot (interrupted install); restoring from the snapshot");
            let machine = decode_machine(&meta, &data).map_err(|source| StoreError::Codec {
                path: store.db.path().to_string(),
                source,
            })?;
            store.replace(machine).map_err(|e| StoreError::Io {
                path: store.db.path().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        Ok(store)
    }

    /// A receiver that sees every newly applied state; the proxy and admin API read from it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published
            .send_replace(Arc::new(self.machine.state.clone()));
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        match self
            .snapshots
            .get(SNAPSHOT)
            .map_err(|e| self.db.sled_err(e))?
        {
            None => Ok(None),
            Some(b) => decode(&self.db, &b).map(Some),
        }
    }

    /// Replaces the whole machine (snapshot installation) in one atomic batch.
    fn replace(&mut self, machine: Machine) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.tree.iter() {
            let (k, _) = item.map_err(|e| sm_err(&e))?;
            batch.remove(k);
        }
        fn put_all<R: Resource>(
            batch: &mut sled::Batch,
            state: &State,
        ) -> Result<(), StorageError> {
            for (name, e) in R::table(state).iter() {
                batch.insert(
                    entity_key(R::KIND, name),
                    codec::encode(e).map_err(|e| sm_err(&e))?,
                );
            }
            Ok(())
        }
        put_all::<ServiceSpec>(&mut batch, &machine.state)?;
        put_all::<RouteSpec>(&mut batch, &machine.state)?;
        put_all::<ConsumerSpec>(&mut batch, &machine.state)?;
        put_all::<RateLimitSpec>(&mut batch, &machine.state)?;
        put_all::<StoredKey>(&mut batch, &machine.state)?;
        put_all::<InstanceSpec>(&mut batch, &machine.state)?;
        put_all::<CertificateSpec>(&mut batch, &machine.state)?;
        for (id, entry) in &machine.recent.by_id {
            batch.insert(
                &request_key(*id),
                codec::encode(entry).map_err(|e| sm_err(&e))?,
            );
        }
        batch.insert(
            META_APPLIED,
            codec::encode(&machine.last_applied).map_err(|e| sm_err(&e))?,
        );
        batch.insert(
            META_MEMBERSHIP,
            codec::encode(&machine.membership).map_err(|e| sm_err(&e))?,
        );
        self.tree.apply_batch(batch).map_err(|e| sm_err(&e))?;
        self.machine = machine;
        self.publish();
        Ok(())
    }
}

impl Durable {
    fn path(&self) -> String {
        self.dir().display().to_string()
    }
}

/// The bytes inside a snapshot: the state and the de-duplication window.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: State,
    recent: Recent,
}

fn decode_machine(meta: &SnapshotMeta, data: &[u8]) -> Result<Machine, codec::CodecError> {
    let body: SnapshotBody = codec::decode(data)?;
    let mut state = body.state;
    state.applied_index = meta.last_log_id.map_or(0, |l| l.index);
    Ok(Machine {
        state,
        recent: body.recent,
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    })
}

/// Builds snapshots from a copy of the machine taken when the build was requested, so applying
/// goes on meanwhile.
pub struct SnapshotBuilder {
    machine: Machine,
    snapshots: sled::Tree,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let m = &self.machine;
        let body = SnapshotBody {
            state: m.state.clone(),
            recent: m.recent.clone(),
        };
        let data = codec::encode(&body).map_err(|e| snap_err(&e))?;
        let snapshot_id = match m.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand_suffix()),
            None => format!("empty-{}", rand_suffix()),
        };
        let meta = SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: m.membership.clone(),
            snapshot_id,
        };
        let stored = codec::encode(&(&meta, &data)).map_err(|e| snap_err(&e))?;
        self.snapshots
            .insert(SNAPSHOT, stored)
            .map_err(|e| snap_err(&e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Distinguishes snapshots built at the same log id (ids must be unique, not random-quality).
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.machine.last_applied, self.machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut dirty = Dirty::new();
        let mut batch = sled::Batch::default();
        let m = &mut self.machine;
        for entry in entries {
            let index = entry.log_id.index;
            m.last_applied = Some(entry.log_id);
            m.state.applied_index = index;
            let result = match entry.payload {
                EntryPayload::Blank => Ok(Outcome {
                    index,
                    version: None,
                    created: false,
                }),
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), mem);
                    batch.insert(
                        META_MEMBERSHIP,
                        codec::encode(&m.membership).map_err(|e| sm_err(&e))?,
                    );
                    Ok(Outcome {
                        index,
                        version: None,
                        created: false,
                    })
                }
                EntryPayload::Normal(proposal) => match m.recent.get(proposal.request_id) {
                    Some(earlier) => earlier.clone(),
                    None => {
                        let result = apply(&mut m.state, index, &proposal, &mut dirty);
                        let record = (index, result.clone());
                        batch.insert(
                            &request_key(proposal.request_id),
                            codec::encode(&record).map_err(|e| sm_err(&e))?,
                        );
                        for old in m.recent.insert(proposal.request_id, index, result.clone()) {
                            batch.remove(&request_key(old));
                        }
                        result
                    }
                },
            };
            results.push(result);
        }
        dirty.sort();
        dirty.dedup();
        for (kind, name) in &dirty {
            let key = entity_key(*kind, name);
            let bytes = match kind {
                Kind::Service => m.state.services.get(name).map(codec::encode),
                Kind::Route => m.state.routes.get(name).map(codec::encode),
                Kind::Consumer => m.state.consumers.get(name).map(codec::encode),
                Kind::RateLimit => m.state.rate_limits.get(name).map(codec::encode),
                Kind::Key => m.state.keys.get(name).map(codec::encode),
                Kind::Instance => m.state.instances.get(name).map(codec::encode),
                Kind::Certificate => m.state.certificates.get(name).map(codec::encode),
            };
            match bytes {
                Some(b) => batch.insert(key, b.map_err(|e| sm_err(&e))?),
                None => batch.remove(key),
            }
        }
        batch.insert(
            META_APPLIED,
            codec::encode(&m.last_applied).map_err(|e| sm_err(&e))?,
        );
        self.tree.apply_batch(batch).map_err(|e| sm_err(&e))?;
        self.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            machine: self.machine.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "installing snapshot");
        let machine = decode_machine(meta, &data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        // Keep the snapshot first: if we crash half-way, `new` restores from it.
        let stored = codec::encode(&(meta, &data)).map_err(|e| snap_err(&e))?;
        self.snapshots
            .insert(SNAPSHOT, stored)
            .map_err(|e| snap_err(&e))?;
        self.replace(machine)?;
        self.db.sync().await.map_err(|e| snap_err(&e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self.read_snapshot().map_err(|e| snap_err(&e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
