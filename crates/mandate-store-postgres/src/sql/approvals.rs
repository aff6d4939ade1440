//! Approval requests and their one-way moves.
//!
//! A move reads the approval under a row lock (`FOR UPDATE`), so of racing calls on one
//! approval the second sees the first's result, and writes it back in the same transaction.

use mandate_core::{Approval, ApprovalStatus};
use mandate_store::{ApprovalFilter, Change, StoreError, StoreResult};
use sqlx::{PgConnection, PgPool};

use super::{Arg, Args, from_json, get, limit, notify, notifying, to_json};
use crate::error::{Constraint, constraint, db};
use crate::notify::Envelope;

pub(crate) async fn insert(pool: &PgPool, env: &Envelope, a: &Approval) -> StoreResult<()> {
    const SQL: &str = notifying!(
        "INSERT INTO approvals (id, task, binding, status, created_at_ms, expires_at_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING 1",
        8
    );
    let body = to_json("approval", a)?;
    let result = sqlx::query(SQL)
        .bind(&a.id)
        .bind(&a.task_id)
        .bind(&a.binding)
        .bind(a.status.as_str())
        .bind(a.created_at_ms)
        .bind(a.expires_at_ms)
        .bind(body)
        .bind(env.payloads(&Change::Approval(a.id.clone())))
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(match constraint(&e) {
            Some(Constraint::Unique(_)) => StoreError::Conflict(format!("approval `{}`", a.id)),
            Some(Constraint::ForeignKey(_)) => StoreError::NotFound(format!("task `{}`", a.task_id)),
            None => db(e),
        }),
    }
}

pub(crate) async fn get_one(pool: &PgPool, id: &str) -> StoreResult<Option<Approval>> {
    let row = sqlx::query("SELECT body FROM approvals WHERE id = $1").bind(id).fetch_optional(pool).await.map_err(db)?;
    row.map(|r| get::<String>(&r, 0).and_then(|b| parse(&b))).transpose()
}

pub(crate) async fn list(pool: &PgPool, f: &ApprovalFilter) -> StoreResult<Vec<Approval>> {
    let mut args = Args::new();
    let mut clauses = Vec::new();
    if let Some(status) = f.status {
        clauses.push(format!("status = {}", args.push(Arg::Text(status.as_str().to_owned()))));
    }
    if let Some(task) = &f.task {
        clauses.push(format!("task = {}", args.push(Arg::Text(task.clone()))));
    }
    let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let n = args.push(Arg::Int(limit(f.limit)));
    let sql = format!("SELECT body FROM approvals {filter} ORDER BY created_at_ms DESC, id DESC LIMIT {n}");
    let rows = args.bind(sqlx::query(&sql)).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(|r| get::<String>(r, 0).and_then(|b| parse(&b))).collect()
}

pub(crate) async fn open_by_binding(pool: &PgPool, binding: &str, now_ms: i64) -> StoreResult<Option<Approval>> {
    let row = sqlx::query(
        "SELECT body FROM approvals
         WHERE binding = $1 AND status IN ('pending', 'approved') AND expires_at_ms > $2
         ORDER BY created_at_ms DESC, id DESC LIMIT 1",
    )
    .bind(binding)
    .bind(now_ms)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.map(|r| get::<String>(&r, 0).and_then(|b| parse(&b))).transpose()
}

#[allow(clippy::too_many_arguments, reason = "the trait method's arguments, plus the pool and envelope")]
pub(crate) async fn decide(
    pool: &PgPool,
    env: &Envelope,
    id: &str,
    to: ApprovalStatus,
    by: &str,
    by_label: &str,
    comment: &str,
    at_ms: i64,
) -> StoreResult<Option<(Approval, bool)>> {
    if !matches!(to, ApprovalStatus::Approved | ApprovalStatus::Denied) {
        return Err(StoreError::Invalid(format!("an approval cannot be decided as `{}`", to.as_str())));
    }
    let mut tx = pool.begin().await.map_err(db)?;
    let Some(mut a) = locked(&mut tx, id).await? else { return Ok(None) };
    if a.status != ApprovalStatus::Pending || a.expires_at_ms <= at_ms {
        return Ok(Some((a, false)));
    }
    a.status = to;
    a.decided_by = Some(by.to_owned());
    a.decided_by_label = Some(by_label.to_owned());
    a.decided_at_ms = Some(at_ms);
    a.comment = (!comment.is_empty()).then(|| comment.to_owned());
    update(&mut tx, &a, ApprovalStatus::Pending).await?;
    notify(&mut tx, env.payloads(&Change::Approval(a.id.clone()))).await?;
    tx.commit().await.map_err(db)?;
    Ok(Some((a, true)))
}

pub(crate) async fn use_once(pool: &PgPool, env: &Envelope, id: &str, decision_id: &str, at_ms: i64) -> StoreResult<Option<Approval>> {
    let mut tx = pool.begin().await.map_err(db)?;
    let Some(mut a) = locked(&mut tx, id).await? else { return Ok(None) };
    if a.status != ApprovalStatus::Approved || a.expires_at_ms <= at_ms {
        return Ok(None);
    }
    a.status = ApprovalStatus::Used;
    a.used_at_ms = Some(at_ms);
    a.used_by_decision = Some(decision_id.to_owned());
    update(&mut tx, &a, ApprovalStatus::Approved).await?;
    notify(&mut tx, env.payloads(&Change::Approval(a.id.clone()))).await?;
    tx.commit().await.map_err(db)?;
    Ok(Some(a))
}

/// Expires every open approval whose time has come. The due rows are locked in expiry order,
/// so racing sweeps wait for each other without deadlocking, and a row a racing sweep expired
/// meanwhile no longer matches after the wait.
pub(crate) async fn expire(pool: &PgPool, env: &Envelope, now_ms: i64) -> StoreResult<Vec<Approval>> {
    let mut tx = pool.begin().await.map_err(db)?;
    let rows = sqlx::query(
        "SELECT body FROM approvals WHERE status IN ('pending', 'approved') AND expires_at_ms <= $1
         ORDER BY expires_at_ms, id FOR UPDATE",
    )
    .bind(now_ms)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let due: Vec<Approval> = rows.iter().map(|r| get::<String>(r, 0).and_then(|b| parse(&b))).collect::<StoreResult<_>>()?;
    let mut expired = Vec::with_capacity(due.len());
    let mut payloads = Vec::new();
    for mut a in due {
        let was = a.status;
        a.status = ApprovalStatus::Expired;
        update(&mut tx, &a, was).await?;
        payloads.extend(env.payloads(&Change::Approval(a.id.clone())));
        expired.push(a);
    }
    notify(&mut tx, payloads).await?;
    tx.commit().await.map_err(db)?;
    Ok(expired)
}

/// The approval, its row locked until the transaction ends.
async fn locked(tx: &mut PgConnection, id: &str) -> StoreResult<Option<Approval>> {
    let row = sqlx::query("SELECT body FROM approvals WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await.map_err(db)?;
    row.map(|r| get::<String>(&r, 0).and_then(|b| parse(&b))).transpose()
}

/// Writes `a` over the row that is still in status `was`; anything else is a lost race, which
/// the row lock taken by the caller's transaction rules out.
async fn update(tx: &mut PgConnection, a: &Approval, was: ApprovalStatus) -> StoreResult<()> {
    let body = to_json("approval", a)?;
    let done = sqlx::query("UPDATE approvals SET status = $2, body = $3 WHERE id = $1 AND status = $4")
        .bind(&a.id)
        .bind(a.status.as_str())
        .bind(body)
        .bind(was.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if done.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Backend(format!("approval `{}` changed under a row lock", a.id))) }
}

fn parse(body: &str) -> StoreResult<Approval> {
    from_json("approval", body)
}
