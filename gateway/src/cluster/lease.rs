//! Partition ownership through lease rows in PostgreSQL.
//!
//! Table `partition_leases(partition, owner, epoch, lease_until)`: one row per partition.
//! An instance *acquires* a partition whose lease is free (never owned, released) or
//! expired; acquiring bumps `epoch`, the fencing token every state write of the partition
//! can check (`… WHERE partition = $p AND epoch = $e`). The owner *renews* its leases on
//! every heartbeat; one that cannot renew within the lease's time to live stops its
//! sessions, because another instance may take them from then on. A graceful *release*
//! clears the owner and ends the lease at once. Instances announce themselves in
//! `cluster_instances(instance, alive_until)`; the live ones share the partitions evenly.
//!
//! All times are PostgreSQL's `now()`: instances' clocks never compare with each other.
//!
//! [`wanted`] is the pure part: from the live instances and the current leases, the set of
//! partitions this instance should hold. [`LeaseStore`] is the SQL.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// A PostgreSQL error of the lease store.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Connecting failed.
    #[error("cannot connect to PostgreSQL for the partition leases ({url}): {source}. Check cluster.postgres_url and that the server runs.")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The error.
        source: tokio_postgres::Error,
    },
    /// A statement failed (connection lost, server down).
    #[error("partition lease statement failed: {0}")]
    Sql(#[from] tokio_postgres::Error),
}

/// One partition's lease as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The partition.
    pub partition: u32,
    /// Its owner, if any.
    pub owner: Option<String>,
    /// The fencing epoch (bumped by every acquisition).
    pub epoch: i64,
    /// Whether the lease is still running (`lease_until > now()`).
    pub live: bool,
}

/// A lease just acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The new epoch.
    pub epoch: i64,
    /// How long to wait before connecting: the rest of the broker's `ack_wait` after the
    /// previous owner's lease expired (it may have died with messages unacknowledged, which
    /// the broker redelivers only after `ack_wait`; connecting earlier would receive newer
    /// messages before them). Zero after a graceful release or for a partition never owned.
    pub wait: Duration,
}

/// How many of `partitions` the instance ranked `rank` (0-based, instances sorted by id)
/// among `instances` should hold: an even share, the first `partitions % instances` one more.
pub fn quota(rank: usize, instances: usize, partitions: u32) -> usize {
    let n = partitions as usize;
    let k = instances.max(1);
    n / k + usize::from(rank < n % k)
}

/// The partitions instance `me` should hold now.
///
/// - Its share is [`quota`] of its rank among the live instances (`me` counts as live).
/// - It keeps the partitions it holds (lowest first) up to that share and lets the rest go.
/// - Below its share it adds partitions whose lease is free or expired, in an order rotated
///   by its rank so that instances starting together reach for different partitions first.
///
/// A partition leased by another instance is never wanted while that lease runs: it moves
/// only after its owner releases it (being above its share) or its lease expires.
pub fn wanted(me: &str, live: &[String], leases: &[LeaseView], partitions: u32) -> BTreeSet<u32> {
    let mut instances: Vec<&str> = live.iter().map(String::as_str).collect();
    instances.push(me);
    instances.sort_unstable();
    instances.dedup();
    let rank = instances.iter().position(|i| *i == me).unwrap_or(0);
    let share = quota(rank, instances.len(), partitions);

    let held = |l: &&LeaseView| l.live && l.owner.as_deref() == Some(me);
    let mut want: BTreeSet<u32> = leases
        .iter()
        .filter(held)
        .map(|l| l.partition)
        .filter(|p| *p < partitions)
        .collect();
    while want.len() > share {
        want.pop_last();
    }
    if want.len() < share {
        let taken: BTreeSet<u32> = leases
            .iter()
            .filter(|l| l.live && l.owner.is_some())
            .map(|l| l.partition)
            .collect();
        let start = (rank as u64 * u64::from(partitions) / instances.len() as u64) as u32;
        let free = (0..partitions)
            .map(|i| (start + i) % partitions.max(1))
            .filter(|p| !taken.contains(p));
        for p in free {
            if want.len() >= share {
                break;
            }
            want.insert(p);
        }
    }
    want
}

/// The lease table in PostgreSQL (one connection; reconnect by opening a new store).
pub struct LeaseStore {
    client: Client,
    instance: String,
}

impl LeaseStore {
    /// Connects, creates the tables if missing and the rows of `partitions` partitions.
    pub async fn open(
        url: &str,
        instance: &str,
        partitions: u32,
    ) -> Result<LeaseStore, LeaseError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|source| LeaseError::Connect {
                url: redact(url),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection of the partition leases ended.");
            }
        });
        let mut store = LeaseStore {
            client,
            instance: instance.to_owned(),
        };
        store.migrate(partitions).await?;
        Ok(store)
    }

    /// Whether the connection is gone (open a new store then).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    async fn migrate(&mut self, partitions: u32) -> Result<(), LeaseError> {
        let tx = self.client.transaction().await?;
        // Instances starting together: one creates, the others wait (CREATE IF NOT EXISTS races).
        tx.execute("SELECT pg_advisory_xact_lock(4242, 0)", &[])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS partition_leases (
                 partition   integer PRIMARY KEY,
                 owner       text,
                 epoch       bigint NOT NULL DEFAULT 0,
                 lease_until timestamptz NOT NULL DEFAULT 'epoch'
             );
             CREATE TABLE IF NOT EXISTS cluster_instances (
                 instance    text PRIMARY KEY,
                 alive_until timestamptz NOT NULL,
                 started_at  timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await?;
        let n = i32::try_from(partitions).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO partition_leases (partition) SELECT generate_series(0, $1::integer - 1)
             ON CONFLICT (partition) DO NOTHING",
            &[&n],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Announces this instance alive for `ttl` and returns the live instances (sorted).
    pub async fn heartbeat(&self, ttl: Duration) -> Result<Vec<String>, LeaseError> {
        let ms = millis(ttl);
        self.client
            .execute(
                "INSERT INTO cluster_instances (instance, alive_until)
                 VALUES ($1, now() + $2::bigint * interval '1 millisecond')
                 ON CONFLICT (instance) DO UPDATE SET alive_until = EXCLUDED.alive_until",
                &[&self.instance, &ms],
            )
            .await?;
        let rows = self
            .client
            .query(
                "SELECT instance FROM cluster_instances WHERE alive_until > now() ORDER BY instance",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Extends the running leases of `held` (partition, epoch) by `ttl`; returns those
    /// renewed. A lease of this instance that it does not hold in memory (left by an earlier
    /// process with the same id) is not renewed: it expires and is taken like any other.
    pub async fn renew(
        &self,
        ttl: Duration,
        held: &[(u32, i64)],
    ) -> Result<Vec<(u32, i64)>, LeaseError> {
        let partitions: Vec<i32> = held.iter().map(|(p, _)| *p as i32).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| *e).collect();
        let rows = self
            .client
            .query(
                "UPDATE partition_leases l SET lease_until = now() + $2::bigint * interval '1 millisecond'
                 FROM unnest($3::integer[], $4::bigint[]) AS h(partition, epoch)
                 WHERE l.partition = h.partition AND l.epoch = h.epoch
                   AND l.owner = $1 AND l.lease_until > now()
                 RETURNING l.partition, l.epoch",
                &[&self.instance, &millis(ttl), &partitions, &epochs],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1)))
            .collect())
    }

    /// Every partition's lease.
    pub async fn leases(&self) -> Result<Vec<LeaseView>, LeaseError> {
        let rows = self
            .client
            .query(
                "SELECT partition, owner, epoch, lease_until > now() FROM partition_leases ORDER BY partition",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| LeaseView {
                partition: r.get::<_, i32>(0) as u32,
                owner: r.get(1),
                epoch: r.get(2),
                live: r.get(3),
            })
            .collect())
    }

    /// Takes partition `p` if its lease is free or expired (bumping the epoch), for `ttl`.
    /// `None`: another instance holds it.
    pub async fn acquire(
        &self,
        p: u32,
        ttl: Duration,
        ack_wait: Duration,
    ) -> Result<Option<Acquired>, LeaseError> {
        let p = i32::try_from(p).unwrap_or(i32::MAX);
        let row = self
            .client
            .query_opt(
                "WITH prev AS (
                     SELECT partition, owner, lease_until FROM partition_leases
                     WHERE partition = $1 FOR UPDATE
                 )
                 UPDATE partition_leases l
                 SET owner = $2, epoch = l.epoch + 1,
                     lease_until = now() + $3::bigint * interval '1 millisecond'
                 FROM prev
                 WHERE l.partition = prev.partition
                   AND (prev.owner IS NULL OR prev.lease_until <= now())
                 RETURNING l.epoch, prev.owner,
                     (EXTRACT(EPOCH FROM (now() - prev.lease_until)) * 1000)::bigint",
                &[&p, &self.instance, &millis(ttl)],
            )
            .await?;
        Ok(row.map(|r| {
            let previous: Option<String> = r.get(1);
            let expired_ms_ago: i64 = r.get(2);
            let wait = match previous {
                // The previous owner did not release it: it died or lost its database.
                Some(_) => ack_wait.saturating_sub(Duration::from_millis(
                    u64::try_from(expired_ms_ago).unwrap_or(0),
                )),
                None => Duration::ZERO,
            };
            Acquired {
                epoch: r.get(0),
                wait,
            }
        }))
    }

    /// Gives partition `p` up (if this instance still holds it at `epoch`): free at once.
    pub async fn release(&self, p: u32, epoch: i64) -> Result<bool, LeaseError> {
        let p = i32::try_from(p).unwrap_or(i32::MAX);
        let n = self
            .client
            .execute(
                "UPDATE partition_leases SET owner = NULL, lease_until = now()
                 WHERE partition = $1 AND owner = $2 AND epoch = $3",
                &[&p, &self.instance, &epoch],
            )
            .await?;
        Ok(n == 1)
    }

    /// Removes this instance from the live ones (graceful stop, after every release).
    pub async fn leave(&self) -> Result<(), LeaseError> {
        self.client
            .execute(
                "DELETE FROM cluster_instances WHERE instance = $1",
                &[&self.instance],
            )
            .await?;
        Ok(())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `url` with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(p: u32, owner: Option<&str>, live: bool) -> LeaseView {
        LeaseView {
            partition: p,
            owner: owner.map(str::to_owned),
            epoch: 1,
            live,
        }
    }

    fn free(n: u32) -> Vec<LeaseView> {
        (0..n).map(|p| lease(p, None, false)).collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Runs every instance's [`wanted`] in turn against a shared table, acquiring and
    /// releasing as the coordinator does, until nothing changes.
    fn settle(instances: &[&str], leases: &mut [LeaseView], n: u32) {
        let live = names(instances);
        for _round in 0..10 {
            let mut changed = false;
            for me in instances {
                let want = wanted(me, &live, leases, n);
                for l in leases.iter_mut() {
                    let mine = l.live && l.owner.as_deref() == Some(*me);
                    let free = !l.live || l.owner.is_none();
                    if mine && !want.contains(&l.partition) {
                        (l.owner, l.live, changed) = (None, false, true);
                    } else if free && want.contains(&l.partition) {
                        (l.owner, l.live, changed) = (Some((*me).into()), true, true);
                        l.epoch += 1;
                    }
                }
            }
            if !changed {
                return;
            }
        }
        panic!("did not settle: {leases:?}");
    }

    fn counts(leases: &[LeaseView], instances: &[&str]) -> Vec<usize> {
        instances
            .iter()
            .map(|i| {
                leases
                    .iter()
                    .filter(|l| l.live && l.owner.as_deref() == Some(*i))
                    .count()
            })
            .collect()
    }

    #[test]
    fn quotas_are_even_within_one_and_sum_to_n() {
        for (k, n) in [(1, 64), (2, 64), (3, 64), (5, 7), (7, 5)] {
            let q: Vec<usize> = (0..k).map(|r| quota(r, k, n)).collect();
            assert_eq!(q.iter().sum::<usize>(), n as usize, "{k} {n}");
            assert!(q.iter().max().unwrap() - q.iter().min().unwrap() <= 1);
        }
        assert_eq!(quota(0, 3, 64), 22);
        assert_eq!(quota(2, 3, 64), 21);
    }

    #[test]
    fn a_lone_instance_takes_all_and_two_starting_together_reach_for_different_halves() {
        assert_eq!(wanted("a", &[], &free(8), 8).len(), 8);
        let both = names(&["a", "b"]);
        let a = wanted("a", &both, &free(64), 64);
        let b = wanted("b", &both, &free(64), 64);
        assert_eq!((a.len(), b.len()), (32, 32));
        assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    }

    #[test]
    fn partitions_follow_joins_deaths_and_graceful_leaves() {
        let n = 64;
        let mut leases = free(n);
        settle(&["a", "b"], &mut leases, n);
        assert_eq!(counts(&leases, &["a", "b"]), [32, 32]);
        // c joins: a and b each let go of the partitions above their share, c takes them.
        settle(&["a", "b", "c"], &mut leases, n);
        assert_eq!(counts(&leases, &["a", "b", "c"]), [22, 21, 21]);
        // b dies: nothing moves while its leases run ...
        let before = leases.clone();
        for me in ["a", "c"] {
            let want = wanted(me, &names(&["a", "c"]), &leases, n);
            let b_owned = leases
                .iter()
                .filter(|l| l.owner.as_deref() == Some("b"))
                .any(|l| want.contains(&l.partition));
            assert!(!b_owned, "{me} reached for a running lease of b");
        }
        assert_eq!(leases, before);
        // ... then they expire, and a and c share everything.
        for l in leases
            .iter_mut()
            .filter(|l| l.owner.as_deref() == Some("b"))
        {
            l.live = false;
        }
        settle(&["a", "c"], &mut leases, n);
        assert_eq!(counts(&leases, &["a", "c"]), [32, 32]);
        assert!(leases.iter().all(|l| l.live && l.owner.is_some()));
    }

    #[test]
    fn an_instance_above_its_share_keeps_its_lowest_partitions() {
        let leases: Vec<LeaseView> = (0..4).map(|p| lease(p, Some("a"), true)).collect();
        let want = wanted("a", &names(&["a", "b"]), &leases, 4);
        assert_eq!(want.into_iter().collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn passwords_are_not_repeated_in_messages() {
        assert_eq!(
            redact("postgres://gw:secret@127.0.0.1:5432/gw"),
            "postgres://gw:***@127.0.0.1:5432/gw"
        );
        assert!(!redact("not a url").contains("not"));
    }
}
