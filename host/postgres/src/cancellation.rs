//! [`Cancellation`] on PostgreSQL: one statement withdraws every waiting
//! job it is given (rows locked, so a claim cannot slip in; the server's
//! clock decides whether a lease ran out, as claims do); requests for
//! running jobs are rows that workers poll.

use async_trait::async_trait;
use xylem_core::store::{CANCEL_REQUEST_TTL, Cancellation, StoreResult, Withdrawn};
use xylem_core::time::{Millis, ms, now_ms};

use crate::{PostgresStore, db};

#[async_trait]
impl Cancellation for PostgresStore {
    async fn withdraw(&self, ids: &[String], _now: Millis) -> StoreResult<Vec<Withdrawn>> {
        // status: 0 waiting (ready or delayed), 1 leased, 2 dead. Each id's
        // row, locked; the waiting ones deleted; what each was, returned.
        let rows: Vec<(String, i16, bool)> = sqlx::query_as(concat!(
            "WITH found AS MATERIALIZED (
                 SELECT id, status, lease_until <= ",
            now_ms!(),
            " AS lapsed FROM queue WHERE id = ANY($1::text[]) FOR UPDATE),
             gone AS (
                 DELETE FROM queue q USING found f
                 WHERE q.id = f.id AND (f.status = 0 OR (f.status = 1 AND f.lapsed)))
             SELECT id, status, lapsed FROM found"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(ids
            .iter()
            .map(|id| match rows.iter().find(|(found, _, _)| found == id) {
                None => Withdrawn::Absent,
                Some((_, 2, _)) => Withdrawn::Dead,
                Some((_, 1, false)) => Withdrawn::Running,
                Some(_) => Withdrawn::Removed,
            })
            .collect())
    }

    async fn request_cancel(&self, ids: &[String]) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM cancel_requests WHERE lapses_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO cancel_requests (id, lapses_at) SELECT unnest($1::text[]), $2
             ON CONFLICT (id) DO UPDATE SET lapses_at = EXCLUDED.lapses_at",
        )
        .bind(ids)
        .bind(now + ms(CANCEL_REQUEST_TTL))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn cancel_requested(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM cancel_requests WHERE id = ANY($1::text[]) AND lapses_at > $2",
        )
        .bind(ids)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }
}
