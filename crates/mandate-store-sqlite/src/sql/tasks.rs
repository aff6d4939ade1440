//! Tasks, their endings and delegation trees, and attestation replay protection.

use std::collections::HashSet;

use mandate_core::{AgentName, Task, TaskEnd, TaskStatus};
use mandate_store::{StoreError, StoreResult, TaskFilter};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use super::{from_json, limit, to_json};
use crate::error::{Constraint, constraint, corrupt, db};

const TASK_COLUMNS: &str = "id, agent, status, intent, created_at_ms, expires_at_ms, mandate_jti, parent_id, root_id, depth, ended";

/// Inserts a task after checking, in the same transaction, that its agent and parent exist, so
/// that a refusal names what is missing.
pub(crate) fn insert_task(c: &mut Connection, t: &Task) -> StoreResult<()> {
    let intent = to_json("task intent", &t.intent)?;
    let ended = t.ended.as_ref().map(|e| to_json("task end", e)).transpose()?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    if !exists(&tx, "SELECT 1 FROM agents WHERE name = ?1", t.agent.as_str())? {
        return Err(StoreError::NotFound(format!("agent `{}`", t.agent)));
    }
    if let Some(parent) = &t.parent_id
        && !exists(&tx, "SELECT 1 FROM tasks WHERE id = ?1", parent)?
    {
        return Err(StoreError::NotFound(format!("parent task `{parent}`")));
    }
    let sql = format!("INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
    let values = params![
        t.id,
        t.agent.as_str(),
        t.status.as_str(),
        intent,
        t.created_at_ms,
        t.expires_at_ms,
        t.mandate_jti,
        t.parent_id,
        t.root_id,
        t.depth,
        ended,
    ];
    match tx.execute(&sql, values) {
        Ok(_) => {}
        Err(e) if constraint(&e) == Some(Constraint::Unique) => {
            return Err(StoreError::Conflict(format!("task `{}`", t.id)));
        }
        Err(e) if constraint(&e) == Some(Constraint::ForeignKey) => {
            return Err(StoreError::NotFound(format!("agent or parent task of task `{}`", t.id)));
        }
        Err(e) => return Err(db(e)),
    }
    tx.commit().map_err(db)
}

pub(crate) fn get_task(c: &Connection, id: &str) -> StoreResult<Option<Task>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([id], task_row).optional()).map_err(db)?;
    row.map(TaskRow::into_task).transpose()
}

pub(crate) fn list_tasks(c: &Connection, f: &TaskFilter) -> StoreResult<Vec<Task>> {
    let mut clauses = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(agent) = &f.agent {
        values.push(SqlValue::Text(agent.clone()));
        clauses.push(format!("agent = ?{}", values.len()));
    }
    if let Some(status) = f.status {
        values.push(SqlValue::Text(status.as_str().to_owned()));
        clauses.push(format!("status = ?{}", values.len()));
    }
    if let Some(root) = &f.root {
        values.push(SqlValue::Text(root.clone()));
        clauses.push(format!("root_id = ?{}", values.len()));
    }
    let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    values.push(SqlValue::Integer(limit(f.limit)));
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks {filter} ORDER BY created_at_ms DESC, id DESC LIMIT ?{}", values.len());
    query_tasks(c, &sql, params_from_iter(values))
}

pub(crate) fn live_tasks(c: &Connection) -> StoreResult<Vec<Task>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'live' ORDER BY created_at_ms DESC, id DESC");
    query_tasks(c, &sql, [])
}

/// Ends each still-live task of `ids` in one transaction; returns those it ended.
pub(crate) fn end_tasks(c: &mut Connection, ids: &[String], end: &TaskEnd) -> StoreResult<Vec<String>> {
    if end.status == TaskStatus::Live {
        return Err(StoreError::Invalid("a task cannot end as `live`".into()));
    }
    let ended_json = to_json("task end", end)?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let mut ended = Vec::new();
    {
        let mut stmt = tx.prepare_cached("UPDATE tasks SET status = ?2, ended = ?3 WHERE id = ?1 AND status = 'live'").map_err(db)?;
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            if stmt.execute(params![id, end.status.as_str(), ended_json]).map_err(db)? == 1 {
                ended.push(id.clone());
            }
        }
    }
    tx.commit().map_err(db)?;
    Ok(ended)
}

pub(crate) fn live_task_ids_of_agent(c: &Connection, agent: &str) -> StoreResult<Vec<String>> {
    query_ids(c, "SELECT id FROM tasks WHERE agent = ?1 AND status = 'live' ORDER BY created_at_ms DESC, id DESC", params![agent])
}

pub(crate) fn expired_live_task_ids(c: &Connection, now_ms: i64) -> StoreResult<Vec<String>> {
    query_ids(c, "SELECT id FROM tasks WHERE status = 'live' AND expires_at_ms <= ?1 ORDER BY expires_at_ms, id", params![now_ms])
}

/// Every task below `id` in its delegation tree. `UNION` (not `UNION ALL`) stops at rows already
/// seen, so even a damaged table with a parent cycle cannot loop.
pub(crate) fn descendant_task_ids(c: &Connection, id: &str) -> StoreResult<Vec<String>> {
    query_ids(
        c,
        "WITH RECURSIVE below (id, depth, created_at_ms) AS (
             SELECT id, depth, created_at_ms FROM tasks WHERE parent_id = ?1
             UNION
             SELECT t.id, t.depth, t.created_at_ms FROM tasks t JOIN below b ON t.parent_id = b.id
         )
         SELECT id FROM below WHERE id <> ?1 ORDER BY depth, created_at_ms, id",
        params![id],
    )
}

/// Purges expired entries, then records `(issuer, jti)`; `true` if it was new.
pub(crate) fn consume_jti(c: &mut Connection, issuer: &str, jti: &str, expires_at_ms: i64, now_ms: i64) -> StoreResult<bool> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    tx.prepare_cached("DELETE FROM used_jtis WHERE expires_at_ms < ?1").and_then(|mut s| s.execute([now_ms])).map_err(db)?;
    let inserted = tx
        .prepare_cached("INSERT INTO used_jtis (issuer, jti, expires_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
        .and_then(|mut s| s.execute(params![issuer, jti, expires_at_ms]))
        .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(inserted == 1)
}

fn exists(c: &Connection, sql: &str, key: &str) -> StoreResult<bool> {
    c.prepare_cached(sql).and_then(|mut s| s.exists([key])).map_err(db)
}

fn query_tasks(c: &Connection, sql: &str, values: impl rusqlite::Params) -> StoreResult<Vec<Task>> {
    let mut stmt = c.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(values, task_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(TaskRow::into_task)).collect()
}

fn query_ids(c: &Connection, sql: &str, values: impl rusqlite::Params) -> StoreResult<Vec<String>> {
    let mut stmt = c.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(values, |r| r.get(0)).map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

struct TaskRow {
    id: String,
    agent: String,
    status: String,
    intent: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    mandate_jti: String,
    parent_id: Option<String>,
    root_id: String,
    depth: u32,
    ended: Option<String>,
}

fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        agent: r.get(1)?,
        status: r.get(2)?,
        intent: r.get(3)?,
        created_at_ms: r.get(4)?,
        expires_at_ms: r.get(5)?,
        mandate_jti: r.get(6)?,
        parent_id: r.get(7)?,
        root_id: r.get(8)?,
        depth: r.get(9)?,
        ended: r.get(10)?,
    })
}

impl TaskRow {
    fn into_task(self) -> StoreResult<Task> {
        let what = format!("task `{}`", self.id);
        let status = TaskStatus::parse(&self.status).ok_or_else(|| corrupt(&what, format!("unknown status `{}`", self.status)))?;
        Ok(Task {
            agent: AgentName::parse(&self.agent).map_err(|e| corrupt(&what, e))?,
            intent: from_json(&what, &self.intent)?,
            ended: self.ended.as_deref().map(|e| from_json(&what, e)).transpose()?,
            id: self.id,
            status,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            mandate_jti: self.mandate_jti,
            parent_id: self.parent_id,
            root_id: self.root_id,
            depth: self.depth,
        })
    }
}
