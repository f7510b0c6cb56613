//! Per-partition device state in PostgreSQL, so that the next owner of a partition
//! resumes its devices where the last one left them: their analytics baselines instead of
//! relearning them, and their sequence state (last numbers per boot, gaps, redeliveries)
//! instead of counting a device's messages handled elsewhere as missing.
//!
//! Tables `analytics_state` and `sequence_state`, both `(device, partition, epoch, state,
//! saved_at)`: one row per device, the same JSON the single-node gateway keeps in
//! `state.db`. A partition session loads its partition's rows when it starts (never
//! consuming without them). Analytics rows are upserted for the devices touched every
//! `analytics.snapshot_every_s` and when the session stops (a hand-over saves before the
//! lease is released); sequence rows with every batch's commit, before its acknowledgements.
//!
//! Fencing: a save is written only while the saver's lease epoch is the partition's
//! current one, and never over a row written at a later epoch, so an owner that lost its
//! lease (stalled, partitioned from the database) cannot overwrite its successor's state.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::lease::redact;
use crate::sequence::DeviceSeq;
use crate::state::StateError;

/// The partitions' shared device state (one connection, reopened when lost).
pub struct PartitionStore {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl PartitionStore {
    /// A store for `url`; connects on first use.
    pub fn new(url: &str) -> PartitionStore {
        PartitionStore {
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
                tracing::warn!(error = %e, "PostgreSQL connection of the partitions' state ended.");
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
                 CREATE INDEX IF NOT EXISTS analytics_state_partition ON analytics_state (partition);
                 CREATE TABLE IF NOT EXISTS sequence_state (
                     device    text PRIMARY KEY,
                     partition integer NOT NULL,
                     epoch     bigint NOT NULL,
                     state     text NOT NULL,
                     saved_at  timestamptz NOT NULL DEFAULT now()
                 );
                 CREATE INDEX IF NOT EXISTS sequence_state_partition ON sequence_state (partition);",
            )
            .await
            .map_err(pg)?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Every saved analytics state (device, JSON) of partition `p`.
    pub async fn load_analytics(&self, p: u32) -> Result<Vec<(String, String)>, StateError> {
        self.load_rows(Table::Analytics, p).await
    }

    /// Upserts analytics `states` (device, JSON) of partition `p` as its owner at `epoch`.
    /// [`StateError::Fenced`] if `epoch` is no longer the partition's lease epoch.
    pub async fn save_analytics(
        &self,
        p: u32,
        epoch: i64,
        states: Vec<(String, String)>,
    ) -> Result<(), StateError> {
        self.save_rows(Table::Analytics, p, epoch, states).await
    }

    /// Every saved sequence state of partition `p`. A row that does not parse is left out
    /// (logged): that device's sequence starts afresh.
    pub async fn load_sequences(&self, p: u32) -> Result<HashMap<String, DeviceSeq>, StateError> {
        let rows = self.load_rows(Table::Sequences, p).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(device, json)| match serde_json::from_str(&json) {
                Ok(seq) => Some((device, seq)),
                Err(e) => {
                    tracing::warn!(device_id = %device, error = %e, "Saved sequence state does not load; the device starts afresh.");
                    None
                }
            })
            .collect())
    }

    /// Upserts the sequence state of `devices` of partition `p` as its owner at `epoch`.
    /// [`StateError::Fenced`] if `epoch` is no longer the partition's lease epoch.
    pub async fn save_sequences(
        &self,
        p: u32,
        epoch: i64,
        devices: &[(String, DeviceSeq)],
    ) -> Result<(), StateError> {
        let mut rows = Vec::with_capacity(devices.len());
        for (device, seq) in devices {
            let json = serde_json::to_string(seq).map_err(|e| {
                StateError::Postgres(format!("cannot serialise {device}'s sequence state: {e}"))
            })?;
            rows.push((device.clone(), json));
        }
        self.save_rows(Table::Sequences, p, epoch, rows).await
    }

    async fn load_rows(&self, table: Table, p: u32) -> Result<Vec<(String, String)>, StateError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT device, state FROM {} WHERE partition = $1",
            table.name()
        );
        let rows = client
            .query(sql.as_str(), &[&partition_key(p)])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn save_rows(
        &self,
        table: Table,
        p: u32,
        epoch: i64,
        states: Vec<(String, String)>,
    ) -> Result<(), StateError> {
        if states.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let (devices, json): (Vec<String>, Vec<String>) = states.into_iter().unzip();
        let t = table.name();
        let sql = format!(
            "WITH lease AS (
                 SELECT 1 FROM partition_leases WHERE partition = $1 AND epoch = $2 FOR SHARE
             ), saved AS (
                 INSERT INTO {t} (device, partition, epoch, state)
                 SELECT d, $1, $2, s FROM unnest($3::text[], $4::text[]) AS u(d, s)
                 WHERE EXISTS (SELECT 1 FROM lease)
                 ON CONFLICT (device) DO UPDATE
                 SET partition = EXCLUDED.partition, epoch = EXCLUDED.epoch,
                     state = EXCLUDED.state, saved_at = now()
                 WHERE {t}.epoch <= EXCLUDED.epoch
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM saved)"
        );
        let current = client
            .query_opt(sql.as_str(), &[&partition_key(p), &epoch, &devices, &json])
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

/// The two per-device tables.
#[derive(Debug, Clone, Copy)]
enum Table {
    Analytics,
    Sequences,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Analytics => "analytics_state",
            Table::Sequences => "sequence_state",
        }
    }
}

fn partition_key(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

fn pg(e: tokio_postgres::Error) -> StateError {
    StateError::Postgres(e.to_string())
}
