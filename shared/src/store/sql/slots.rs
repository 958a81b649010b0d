//! [`SlotStore`] for [`SqlStore`]: the `connector_slots` rows.
//!
//! Why acquisition is atomic: each [`SlotStore::acquire_slot`] is one
//! transaction that first serializes itself against every other acquirer of
//! the same connector, then reads and writes the connector's rows.
//! - PostgreSQL: `pg_advisory_xact_lock(hashtextextended(connector_uuid, 0))`
//!   blocks until no other transaction holds that lock and keeps it until
//!   commit or rollback. Under READ COMMITTED every later statement of the
//!   transaction takes a fresh snapshot, so it sees every acquisition that
//!   committed before the lock was granted. The count of held slots and the
//!   `UPDATE … SET held` that follows it thus run with no concurrent
//!   acquirer of the connector in between. (A hash collision between two
//!   connectors only serializes them needlessly.) `renew_slot` and
//!   `release_slot` change one row of their own and only ever lower the
//!   count, so they need no lock.
//! - SQLite: the transaction opens with `BEGIN IMMEDIATE` (see
//!   [`super::db`]), which takes the database's write lock at once, so no
//!   other writer in any process runs between the count and the update.
//!
//! Expired rows are deleted inside the same serialized transaction, so a
//! dead holder's slot counts until its lease passes and never after.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqlStore;
use super::db::{Dialect, Sql};
use crate::error::Result;
use crate::store::Claim;
use crate::store::slots::{SlotState, SlotStore};

#[async_trait]
impl SlotStore for SqlStore {
    async fn acquire_slot(&self, claim: Claim<'_>, cap: i64) -> Result<SlotState> {
        let Claim {
            connector_uuid,
            holder,
            now,
            until,
        } = claim;
        let mut tx = self.pool.begin().await?;
        if tx.dialect() == Dialect::Postgres {
            Sql::new("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(connector_uuid)
                .execute(&mut tx)
                .await?;
        }
        Sql::new("DELETE FROM connector_slots WHERE connector_uuid = $1 AND expires_at <= $2")
            .bind(connector_uuid)
            .bind(now)
            .execute(&mut tx)
            .await?;
        Sql::new(
            "INSERT INTO connector_slots (connector_uuid, holder, waiting_since, held, expires_at) \
             VALUES ($1, $2, $3, FALSE, $4) \
             ON CONFLICT (connector_uuid, holder) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(connector_uuid)
        .bind(holder)
        .bind(now)
        .bind(until)
        .execute(&mut tx)
        .await?;
        let mine: i64 = Sql::new(
            "SELECT count(*) FROM connector_slots WHERE connector_uuid = $1 AND holder = $2 AND held",
        )
        .bind(connector_uuid)
        .bind(holder)
        .scalar_one(&mut tx)
        .await?;
        if mine > 0 {
            tx.commit().await?;
            return Ok(SlotState::Held);
        }
        let holders: i64 =
            Sql::new("SELECT count(*) FROM connector_slots WHERE connector_uuid = $1 AND held")
                .bind(connector_uuid)
                .scalar_one(&mut tx)
                .await?;
        // Waiters before this one: older, or as old with a smaller holder.
        let ahead: i64 = Sql::new(
            "SELECT count(*) FROM connector_slots w \
             JOIN connector_slots me ON me.connector_uuid = w.connector_uuid AND me.holder = $2 \
             WHERE w.connector_uuid = $1 AND NOT w.held \
             AND (w.waiting_since < me.waiting_since \
                  OR (w.waiting_since = me.waiting_since AND w.holder < me.holder))",
        )
        .bind(connector_uuid)
        .bind(holder)
        .scalar_one(&mut tx)
        .await?;
        let state = if holders + ahead < cap {
            Sql::new("UPDATE connector_slots SET held = TRUE WHERE connector_uuid = $1 AND holder = $2")
                .bind(connector_uuid)
                .bind(holder)
                .execute(&mut tx)
                .await?;
            SlotState::Held
        } else {
            SlotState::Waiting { holders, ahead }
        };
        tx.commit().await?;
        Ok(state)
    }

    async fn renew_slot(&self, connector_uuid: &str, holder: &str, until: DateTime<Utc>) -> Result<bool> {
        let renewed =
            Sql::new("UPDATE connector_slots SET expires_at = $3 WHERE connector_uuid = $1 AND holder = $2")
                .bind(connector_uuid)
                .bind(holder)
                .bind(until)
                .execute(&self.pool)
                .await?;
        Ok(renewed == 1)
    }

    async fn release_slot(&self, connector_uuid: &str, holder: &str) -> Result<()> {
        Sql::new("DELETE FROM connector_slots WHERE connector_uuid = $1 AND holder = $2")
            .bind(connector_uuid)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn held_slots(&self, connector_uuid: &str, now: DateTime<Utc>) -> Result<i64> {
        Ok(Sql::new(
            "SELECT count(*) FROM connector_slots WHERE connector_uuid = $1 AND held AND expires_at > $2",
        )
        .bind(connector_uuid)
        .bind(now)
        .scalar_one(&self.pool)
        .await?)
    }
}
