//! Clustered mode (`[cluster] enabled = true`): several gateway instances behind a NATS
//! cluster's MQTT listeners, sharing the work by device partition.
//!
//! - [`partition`]: the broker maps `fixtures/<id>/<kind>` to `fixtures/<P>/<id>/<kind>`
//!   with `P = FNV-1a(id) mod N`; the gateway computes the same `P`.
//! - [`lease`]: which instance owns which partition — lease rows in PostgreSQL with a
//!   fencing epoch, renewed by heartbeat, spread evenly over the live instances.
//! - [`session`]: for each owned partition, one persistent MQTT session `gw-p<P>` on
//!   `fixtures/<P>/+/+`, running today's ingest pipeline (ack after the durable write).
//! - [`snapshots`]: each partition's analytics and sequence state in PostgreSQL, fenced by
//!   the lease epoch, loaded by the next owner.
//!
//! [`run`] is the coordinator: every `lease_ttl / 3` it heartbeats, renews its leases,
//! stops the sessions of leases it lost, lets go of partitions above its share (graceful
//! hand-over: finish in-flight batches, save the analytics state, disconnect, release)
//! and acquires free or expired ones (after a crashed owner: connect at once, see `ack_wait_ms`).
//!
//! Single-node mode (the default) never touches this module.

pub mod lease;
pub mod partition;
pub mod session;
pub mod snapshots;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use crate::config::{ClusterConfig, RawCluster};
use lease::{LeaseError, LeaseStore};
use session::{PartitionSession, Shared, StopMode};

/// What this instance owns, for `/health/ready` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Owned partitions and their lease epochs.
    pub partitions: BTreeMap<u32, i64>,
    /// Owned partitions whose subscription the broker has not confirmed yet.
    pub unsubscribed: Vec<u32>,
    /// Live instances seen at the last heartbeat.
    pub instances: Vec<String>,
    /// How many partitions each instance held at the last rebalance (running leases).
    pub owners: BTreeMap<String, usize>,
}

/// A partition this instance holds.
struct Held {
    epoch: i64,
    /// When the last renewal that succeeded was *sent*: PostgreSQL extended the lease to at
    /// least `lease_ttl` after this instant.
    renewed: Instant,
    session: PartitionSession,
    /// The session is finishing its batches to hand the partition over; the lease is
    /// renewed until it has, then released.
    handing_over: bool,
}

/// How long after its last renewal was sent a session is disconnected when no renewal has
/// succeeded since: two rounds (`lease_ttl / 3` each), leaving a third of the lease for the
/// disconnect to take effect before the lease can expire and another instance connect
/// with the same client id. (Waiting the whole `lease_ttl`, a starved instance and the
/// next owner held one session at once and knocked each other off it: messages lost.)
fn fence_after(lease_ttl: Duration) -> Duration {
    lease_ttl * 2 / 3
}

/// The coordinator: runs until `shutdown` flips, then hands every partition over (batches
/// finished, leases renewed meanwhile, then released) and leaves. Database errors are
/// logged and retried; a session whose lease was not renewed in time is disconnected
/// ([`fence_after`]) since another instance may take the lease.
///
/// A round never waits for a session to stop: hand-overs and aborts run beside it, so a
/// slow hand-over never starves the renewal of the other leases.
pub async fn run(
    cluster: ClusterConfig,
    shared: Arc<Shared>,
    ownership: watch::Sender<Ownership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared_brokers = shared.brokers.len();
    tracing::info!(instance = %cluster.instance_id, partitions = cluster.partitions, brokers = shared_brokers, lease_ttl_ms = cluster.lease_ttl.as_millis() as u64, ack_wait_ms = cluster.ack_wait.as_millis() as u64, "Clustered mode: partitions by lease in PostgreSQL.");
    let tick = (cluster.lease_ttl / 3).max(Duration::from_millis(100));
    let mut store: Option<LeaseStore> = None;
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    let mut aborting: Vec<JoinHandle<()>> = Vec::new();
    let mut stopping = false;
    loop {
        let round_start = Instant::now();
        if store.as_ref().is_none_or(LeaseStore::is_closed) {
            store = match LeaseStore::open(
                &cluster.postgres_url,
                &cluster.instance_id,
                cluster.partitions,
            )
            .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "Partition leases unavailable; retrying.");
                    None
                }
            };
        }
        if let Some(s) = &store {
            let round = step(&cluster, s, &shared, &mut held, &mut aborting, stopping);
            match tokio::time::timeout(tick, round).await {
                Ok(Ok(seen)) => publish(&ownership, &held, Some(seen)),
                Ok(Err(e)) => tracing::error!(error = %e, "Partition lease round failed; retrying."),
                Err(_) => tracing::warn!(
                    round_ms = tick.as_millis() as u64,
                    "A partition lease round took longer than its interval (PostgreSQL slow or the machine overloaded); the next one retries."
                ),
            }
        }
        fence(&cluster, &mut held, &mut aborting, Instant::now());
        aborting.retain(|t| !t.is_finished());
        publish(&ownership, &held, None);
        if stopping && held.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(round_start + tick) => {}
            _ = shutdown.changed(), if !stopping => {
                // Graceful stop: every session finishes its batches; the rounds go on
                // renewing the leases until each has, and then release it.
                stopping = true;
                for h in held.values_mut() {
                    h.session.signal(StopMode::HandOver);
                    h.handing_over = true;
                }
                tracing::info!(partitions = held.len(), "Stopping: handing every partition over.");
            }
        }
    }
    for t in aborting {
        let _ = t.await;
    }
    if let Some(s) = &store {
        if let Err(e) = s.leave().await {
            tracing::warn!(error = %e, "Cannot leave the instance list; the entry will expire.");
        }
    }
    let _ = ownership.send(Ownership::default());
    tracing::info!("Clustered mode stopped: every partition released.");
}

/// Disconnects, without waiting, every session whose lease was not renewed within
/// [`fence_after`] of `now`.
fn fence(
    cluster: &ClusterConfig,
    held: &mut BTreeMap<u32, Held>,
    aborting: &mut Vec<JoinHandle<()>>,
    now: Instant,
) {
    let limit = fence_after(cluster.lease_ttl);
    for (p, h) in take_where(held, |_, h| now.duration_since(h.renewed) >= limit) {
        tracing::warn!(
            partition = p,
            epoch = h.epoch,
            since_renewal_ms = now.duration_since(h.renewed).as_millis() as u64,
            "Lease not renewed in time: disconnecting the partition's session before the lease can expire."
        );
        aborting.push(tokio::spawn(h.session.stop(StopMode::Abort)));
    }
}

/// Removes from `held` and returns the partitions for which `which` holds.
fn take_where(
    held: &mut BTreeMap<u32, Held>,
    which: impl Fn(u32, &Held) -> bool,
) -> Vec<(u32, Held)> {
    let keys: Vec<u32> = held
        .iter()
        .filter(|(p, h)| which(**p, h))
        .map(|(p, _)| *p)
        .collect();
    keys.into_iter()
        .filter_map(|p| held.remove(&p).map(|h| (p, h)))
        .collect()
}

/// What a round saw: the live instances, and (when it rebalanced) the running leases'
/// partition counts per owner.
struct Seen {
    live: Vec<String>,
    owners: Option<BTreeMap<String, usize>>,
}

/// One round: heartbeat, renew, release finished hand-overs, rebalance.
async fn step(
    cluster: &ClusterConfig,
    store: &LeaseStore,
    shared: &Arc<Shared>,
    held: &mut BTreeMap<u32, Held>,
    aborting: &mut Vec<JoinHandle<()>>,
    stopping: bool,
) -> Result<Seen, LeaseError> {
    let live = store.heartbeat(cluster.lease_ttl).await?;
    let sent = Instant::now();
    let mine: Vec<(u32, i64)> = held.iter().map(|(p, h)| (*p, h.epoch)).collect();
    let renewed: BTreeMap<u32, i64> = store
        .renew(cluster.lease_ttl, &mine)
        .await?
        .into_iter()
        .collect();
    for (p, h) in take_where(held, |p, h| renewed.get(&p) != Some(&h.epoch)) {
        tracing::warn!(
            partition = p,
            epoch = h.epoch,
            "Lease lost: disconnecting the partition's session."
        );
        aborting.push(tokio::spawn(h.session.stop(StopMode::Abort)));
    }
    for h in held.values_mut() {
        h.renewed = sent;
    }
    // Sessions that ended: hand-overs done (release now), or ended on their own (release
    // too; the partition is free to take again at once).
    let mut handed = Vec::new();
    for (p, h) in take_where(held, |_, h| h.session.is_finished()) {
        if h.handing_over {
            handed.push(p);
        } else {
            tracing::error!(
                partition = p,
                "A partition session ended unexpectedly; releasing it."
            );
        }
        if let Err(e) = store.release(p, h.epoch).await {
            tracing::warn!(partition = p, error = %e, "Cannot release the lease; it will expire.");
        }
    }
    if !handed.is_empty() {
        tracing::info!(partitions = ?handed, "Partitions handed over and released.");
    }
    if stopping {
        return Ok(Seen { live, owners: None });
    }
    // Partitions being handed over count as another's: never wanted again, not free.
    let leases: Vec<lease::LeaseView> = store
        .leases()
        .await?
        .into_iter()
        .map(|mut l| {
            if held.get(&l.partition).is_some_and(|h| h.handing_over) {
                l.owner = Some(String::new());
            }
            l
        })
        .collect();
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for l in leases.iter().filter(|l| l.live) {
        if let Some(owner) = l.owner.as_deref().filter(|o| !o.is_empty()) {
            *owners.entry(owner.to_owned()).or_default() += 1;
        }
    }
    let want = lease::wanted(&cluster.instance_id, &live, &leases, cluster.partitions);
    // Above its share: hand the partitions over (they finish beside the next rounds).
    let giving: Vec<u32> = held
        .iter()
        .filter(|(p, h)| !h.handing_over && !want.contains(p))
        .map(|(p, _)| *p)
        .collect();
    if !giving.is_empty() {
        for p in &giving {
            if let Some(h) = held.get_mut(p) {
                h.session.signal(StopMode::HandOver);
                h.handing_over = true;
            }
        }
        tracing::info!(partitions = ?giving, "Handing partitions over (above this instance's share).");
    }
    let missing: Vec<u32> = want
        .iter()
        .copied()
        .filter(|p| !held.contains_key(p))
        .collect();
    for p in &missing {
        let asked = Instant::now();
        if let Some(a) = store
            .acquire(*p, cluster.lease_ttl, cluster.ack_wait)
            .await?
        {
            tracing::info!(
                partition = p,
                epoch = a.epoch,
                wait_ms = a.wait.as_millis() as u64,
                "Partition lease acquired."
            );
            held.insert(
                *p,
                Held {
                    epoch: a.epoch,
                    renewed: asked,
                    session: PartitionSession::start(*p, a.epoch, a.wait, Arc::clone(shared)),
                    handing_over: false,
                },
            );
        }
    }
    Ok(Seen {
        live,
        owners: Some(owners),
    })
}

fn publish(ownership: &watch::Sender<Ownership>, held: &BTreeMap<u32, Held>, seen: Option<Seen>) {
    ownership.send_modify(|o| {
        o.partitions = held.iter().map(|(p, h)| (*p, h.epoch)).collect();
        o.unsubscribed = held
            .iter()
            .filter(|(_, h)| !h.session.is_subscribed())
            .map(|(p, _)| *p)
            .collect();
        if let Some(seen) = seen {
            o.instances = seen.live;
            if let Some(owners) = seen.owners {
                o.owners = owners;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn a_session_is_fenced_a_third_of_the_lease_before_it_can_expire() {
        let ttl = Duration::from_secs(3);
        let fence = super::fence_after(ttl);
        let round = ttl / 3;
        assert!(fence >= round * 2, "one late round is not yet a lost lease");
        assert!(
            ttl - fence >= round,
            "a third of the lease is left to disconnect"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_configured_by_file_or_env() {
        assert!(Config::load(None, env(&[])).unwrap().cluster.is_none());
        // The example file's [cluster] table, uncommented.
        let example = include_str!("../../../gateway.example.toml");
        let table: String = example
            .lines()
            .skip_while(|l| !l.starts_with("# [cluster]"))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, &table).unwrap();
        let c = Config::load(Some(&path), env(&[]))
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.partitions, 64);
        assert_eq!(c.instance_id, "gw-1");
        assert_eq!(c.lease_ttl, std::time::Duration::from_secs(5));
        assert_eq!(c.ack_wait, std::time::Duration::ZERO);
        assert_eq!(c.brokers.len(), 3);
        assert_eq!(c.brokers[1], ("nats-2".to_owned(), 1883));

        let c = Config::load(
            None,
            env(&[
                ("GATEWAY__CLUSTER__ENABLED", "true"),
                (
                    "GATEWAY__CLUSTER__POSTGRES_URL",
                    "postgres://gw@127.0.0.1:5433/gw",
                ),
                (
                    "GATEWAY__CLUSTER__MQTT_URLS",
                    r#"["mqtt://a:1", "mqtt://b:2"]"#,
                ),
            ]),
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.brokers, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
        assert_eq!(
            c.ack_wait,
            std::time::Duration::ZERO,
            "a take-over connects at once"
        );
        assert!(!c.instance_id.is_empty());

        for (key, value) in [
            ("GATEWAY__CLUSTER__PARTITIONS", "0"),
            ("GATEWAY__CLUSTER__MQTT_URLS", r#"["http://a"]"#),
            ("GATEWAY__CLUSTER__LEASE_TTL_MS", "10"),
        ] {
            let err = Config::load(
                None,
                env(&[
                    ("GATEWAY__CLUSTER__ENABLED", "true"),
                    ("GATEWAY__CLUSTER__POSTGRES_URL", "postgres://gw@h/gw"),
                    (key, value),
                ]),
            )
            .unwrap_err();
            assert!(err.to_string().contains("cluster."), "{err}");
        }
        let err = Config::load(None, env(&[("GATEWAY__CLUSTER__ENABLED", "true")])).unwrap_err();
        assert!(err.to_string().contains("cluster.postgres_url"), "{err}");
    }
}
