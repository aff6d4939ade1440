//! Approval requests and their one-way moves.

use mandate_core::{Approval, ApprovalStatus};
use mandate_store::{ApprovalFilter, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{from_json, limit, to_json};
use crate::error::{Constraint, constraint, db};

pub(crate) fn insert(c: &mut Connection, a: &Approval) -> StoreResult<()> {
    let body = to_json("approval", a)?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let task_known = tx.query_row("SELECT 1 FROM tasks WHERE id = ?1", [&a.task_id], |_| Ok(())).optional().map_err(db)?.is_some();
    if !task_known {
        return Err(StoreError::NotFound(format!("task `{}`", a.task_id)));
    }
    match tx.execute(
        "INSERT INTO approvals (id, task, binding, status, created_at_ms, expires_at_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![a.id, a.task_id, a.binding, a.status.as_str(), a.created_at_ms, a.expires_at_ms, body],
    ) {
        Ok(_) => {}
        Err(e) if constraint(&e) == Some(Constraint::Unique) => return Err(StoreError::Conflict(format!("approval `{}`", a.id))),
        Err(e) => return Err(db(e)),
    }
    tx.commit().map_err(db)
}

pub(crate) fn get(c: &Connection, id: &str) -> StoreResult<Option<Approval>> {
    let body: Option<String> = c
        .prepare_cached("SELECT body FROM approvals WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(db)?;
    body.map(|b| parse(&b)).transpose()
}

pub(crate) fn list(c: &Connection, f: &ApprovalFilter) -> StoreResult<Vec<Approval>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT body FROM approvals
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR task = ?2)
             ORDER BY created_at_ms DESC, id DESC LIMIT ?3",
        )
        .map_err(db)?;
    let rows =
        stmt.query_map(params![f.status.map(ApprovalStatus::as_str), f.task, limit(f.limit)], |r| r.get::<_, String>(0)).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(|b| parse(&b))).collect()
}

pub(crate) fn open_by_binding(c: &Connection, binding: &str, now_ms: i64) -> StoreResult<Option<Approval>> {
    let body: Option<String> = c
        .prepare_cached(
            "SELECT body FROM approvals
             WHERE binding = ?1 AND status IN ('pending', 'approved') AND expires_at_ms > ?2
             ORDER BY created_at_ms DESC, id DESC LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![binding, now_ms], |r| r.get(0)).optional())
        .map_err(db)?;
    body.map(|b| parse(&b)).transpose()
}

pub(crate) fn decide(
    c: &mut Connection,
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
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let Some(mut a) = get(&tx, id)? else { return Ok(None) };
    if a.status != ApprovalStatus::Pending || a.expires_at_ms <= at_ms {
        return Ok(Some((a, false)));
    }
    a.status = to;
    a.decided_by = Some(by.to_owned());
    a.decided_by_label = Some(by_label.to_owned());
    a.decided_at_ms = Some(at_ms);
    a.comment = (!comment.is_empty()).then(|| comment.to_owned());
    update(&tx, &a, ApprovalStatus::Pending)?;
    tx.commit().map_err(db)?;
    Ok(Some((a, true)))
}

pub(crate) fn use_once(c: &mut Connection, id: &str, decision_id: &str, at_ms: i64) -> StoreResult<Option<Approval>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let Some(mut a) = get(&tx, id)? else { return Ok(None) };
    if a.status != ApprovalStatus::Approved || a.expires_at_ms <= at_ms {
        return Ok(None);
    }
    a.status = ApprovalStatus::Used;
    a.used_at_ms = Some(at_ms);
    a.used_by_decision = Some(decision_id.to_owned());
    update(&tx, &a, ApprovalStatus::Approved)?;
    tx.commit().map_err(db)?;
    Ok(Some(a))
}

pub(crate) fn expire(c: &mut Connection, now_ms: i64) -> StoreResult<Vec<Approval>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let due: Vec<Approval> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT body FROM approvals WHERE status IN ('pending', 'approved') AND expires_at_ms <= ?1
                 ORDER BY expires_at_ms, id",
            )
            .map_err(db)?;
        let rows = stmt.query_map([now_ms], |r| r.get::<_, String>(0)).map_err(db)?;
        rows.map(|r| r.map_err(db).and_then(|b| parse(&b))).collect::<StoreResult<_>>()?
    };
    let mut expired = Vec::with_capacity(due.len());
    for mut a in due {
        let was = a.status;
        a.status = ApprovalStatus::Expired;
        update(&tx, &a, was)?;
        expired.push(a);
    }
    tx.commit().map_err(db)?;
    Ok(expired)
}

/// Writes `a` over the row that is still in status `was`; anything else is a lost race, which
/// the write lock taken by the caller's transaction rules out.
fn update(tx: &Transaction<'_>, a: &Approval, was: ApprovalStatus) -> StoreResult<()> {
    let body = to_json("approval", a)?;
    let n = tx
        .execute(
            "UPDATE approvals SET status = ?2, body = ?3 WHERE id = ?1 AND status = ?4",
            params![a.id, a.status.as_str(), body, was.as_str()],
        )
        .map_err(db)?;
    if n == 1 { Ok(()) } else { Err(StoreError::Backend(format!("approval `{}` changed under a write lock", a.id))) }
}

fn parse(body: &str) -> StoreResult<Approval> {
    from_json("approval", body)
}
