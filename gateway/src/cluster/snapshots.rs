//! Analytics state per partition in PostgreSQL, so that the next owner of a partition
//! resumes its devices' baselines instead of relearning them.
//!
//! Table `analytics_state(device, partition, epoch, state, saved_at)`: one row per device,
//! the same JSON the single-node gateway keeps in `state.db`. A partition session loads its
//! partition's rows when it starts and upserts the devices it touched every
//! `analytics.snapshot_every_s` and when it stops (a hand-over saves before the lease is
//! released).
//!
//! Fencing: a save is written only while the saver's lease epoch is the partition's
//! current one, and never over a row written at a later epoch, so an owner that lost its
//! lease (stalled, partitioned from the database) cannot overwrite its successor's state.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::lease::redact;
use crate::state::StateError;

/// The shared analytics state (one connection, reopened when lost).
pub struct AnalyticsStore {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl AnalyticsStore {
    /// A store for `url`; connects on first use.
    pub fn new(url: &str) -> AnalyticsStore {
        AnalyticsStore {
            url: url.to_owned(),
            client: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<Arc<Client>, StateError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| StateError::Postgres(format!("{} ({})", e, redact(&self.url))))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection of the analytics state ended.");
            }
        });
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS analytics_state (
                     device    text PRIMARY KEY,
                     partition integer NOT NULL,
                     epoch     bigint NOT NULL,
                     state     text NOT NULL,
                     saved_at  timestamptz NOT NULL DEFAULT now()
                 );
                 CREATE INDEX IF NOT EXISTS analytics_state_partition ON analytics_state (partition);",
            )
            .await
            .map_err(pg)?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Every saved device state of partition `p`.
    pub async fn load(&self, p: u32) -> Result<Vec<(String, String)>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT device, state FROM analytics_state WHERE partition = $1",
                &[&partition_key(p)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Upserts `states` (device, JSON) of partition `p` as its owner at `epoch`.
    /// [`StateError::Fenced`] if `epoch` is no longer the partition's lease epoch.
    pub async fn save(
        &self,
        p: u32,
        epoch: i64,
        states: Vec<(String, String)>,
    ) -> Result<(), StateError> {
        if states.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let (devices, json): (Vec<String>, Vec<String>) = states.into_iter().unzip();
        let current = client
            .query_opt(
                "WITH lease AS (
                     SELECT 1 FROM partition_leases WHERE partition = $1 AND epoch = $2 FOR SHARE
                 ), saved AS (
                     INSERT INTO analytics_state (device, partition, epoch, state)
                     SELECT d, $1, $2, s FROM unnest($3::text[], $4::text[]) AS u(d, s)
                     WHERE EXISTS (SELECT 1 FROM lease)
                     ON CONFLICT (device) DO UPDATE
                     SET partition = EXCLUDED.partition, epoch = EXCLUDED.epoch,
                         state = EXCLUDED.state, saved_at = now()
                     WHERE analytics_state.epoch <= EXCLUDED.epoch
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM saved)",
                &[&partition_key(p), &epoch, &devices, &json],
            )
            .await
            .map_err(pg)?;
        let held: i64 = current.as_ref().map(|r| r.get(0)).unwrap_or(0);
        if held == 0 {
            return Err(StateError::Fenced {
                partition: p,
                epoch,
            });
        }
        Ok(())
    }
}

fn partition_key(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

fn pg(e: tokio_postgres::Error) -> StateError {
    StateError::Postgres(e.to_string())
}
