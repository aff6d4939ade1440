//! Tasks, their endings and delegation trees, and attestation replay protection.

use std::collections::HashSet;

use mandate_core::{AgentName, Task, TaskEnd, TaskStatus};
use mandate_store::{Change, StoreError, StoreResult, TaskFilter};
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::{Arg, Args, from_json, get, limit, notify, notifying, to_json};
use crate::error::{Constraint, constraint, corrupt, db};
use crate::notify::Envelope;

const TASK_COLUMNS: &str = "id, agent, status, intent, created_at_ms, expires_at_ms, mandate_jti, parent_id, root_id, depth, ended";

/// Inserts a task; the foreign keys name what is missing when its agent or parent is unknown.
pub(crate) async fn insert_task(pool: &PgPool, env: &Envelope, t: &Task) -> StoreResult<()> {
    const SQL: &str = notifying!(
        "INSERT INTO tasks (id, agent, status, intent, created_at_ms, expires_at_ms, mandate_jti, parent_id, root_id, depth, ended)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING 1",
        12
    );
    let intent = to_json("task intent", &t.intent)?;
    let ended = t.ended.as_ref().map(|e| to_json("task end", e)).transpose()?;
    let result = sqlx::query(SQL)
        .bind(&t.id)
        .bind(t.agent.as_str())
        .bind(t.status.as_str())
        .bind(intent)
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .bind(&t.mandate_jti)
        .bind(&t.parent_id)
        .bind(&t.root_id)
        .bind(i64::from(t.depth))
        .bind(ended)
        .bind(env.payloads(&Change::Tasks(vec![t.id.clone()])))
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(match constraint(&e) {
            Some(Constraint::Unique(_)) => StoreError::Conflict(format!("task `{}`", t.id)),
            Some(Constraint::ForeignKey("tasks_agent_fkey")) => StoreError::NotFound(format!("agent `{}`", t.agent)),
            Some(Constraint::ForeignKey("tasks_parent_id_fkey")) => {
                StoreError::NotFound(format!("parent task `{}`", t.parent_id.as_deref().unwrap_or_default()))
            }
            Some(Constraint::ForeignKey(_)) => StoreError::NotFound(format!("agent or parent task of task `{}`", t.id)),
            None => db(e),
        }),
    }
}

pub(crate) async fn get_task(pool: &PgPool, id: &str) -> StoreResult<Option<Task>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(task_row).transpose()
}

pub(crate) async fn list_tasks(pool: &PgPool, f: &TaskFilter) -> StoreResult<Vec<Task>> {
    let mut args = Args::new();
    let mut clauses = Vec::new();
    if let Some(agent) = &f.agent {
        clauses.push(format!("agent = {}", args.push(Arg::Text(agent.clone()))));
    }
    if let Some(status) = f.status {
        clauses.push(format!("status = {}", args.push(Arg::Text(status.as_str().to_owned()))));
    }
    if let Some(root) = &f.root {
        clauses.push(format!("root_id = {}", args.push(Arg::Text(root.clone()))));
    }
    let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let n = args.push(Arg::Int(limit(f.limit)));
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks {filter} ORDER BY created_at_ms DESC, id DESC LIMIT {n}");
    let rows = args.bind(sqlx::query(&sql)).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(task_row).collect()
}

pub(crate) async fn live_tasks(pool: &PgPool) -> StoreResult<Vec<Task>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'live' ORDER BY created_at_ms DESC, id DESC");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(task_row).collect()
}

/// Ends each still-live task of `ids` in one transaction; returns those it ended, in the order
/// given. The rows are locked in id order first, so racing calls over overlapping ids wait for
/// each other instead of deadlocking, and the `status = 'live'` re-check after the wait makes
/// each task end once.
pub(crate) async fn end_tasks(pool: &PgPool, env: &Envelope, ids: &[String], end: &TaskEnd) -> StoreResult<Vec<String>> {
    if end.status == TaskStatus::Live {
        return Err(StoreError::Invalid("a task cannot end as `live`".into()));
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ended_json = to_json("task end", end)?;
    let mut tx = pool.begin().await.map_err(db)?;
    let rows = sqlx::query(
        "UPDATE tasks SET status = $2, ended = $3
         WHERE id IN (SELECT id FROM tasks WHERE id = ANY($1) AND status = 'live' ORDER BY id FOR UPDATE)
           AND status = 'live'
         RETURNING id",
    )
    .bind(ids)
    .bind(end.status.as_str())
    .bind(ended_json)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let done: HashSet<String> = rows.iter().map(|r| get::<String>(r, 0)).collect::<StoreResult<_>>()?;
    let mut seen = HashSet::new();
    let ended: Vec<String> = ids.iter().filter(|id| done.contains(id.as_str()) && seen.insert(id.as_str())).cloned().collect();
    if !ended.is_empty() {
        notify(&mut tx, env.payloads(&Change::Tasks(ended.clone()))).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(ended)
}

pub(crate) async fn live_task_ids_of_agent(pool: &PgPool, agent: &str) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM tasks WHERE agent = $1 AND status = 'live' ORDER BY created_at_ms DESC, id DESC")
        .bind(agent)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(|r| get(r, 0)).collect()
}

pub(crate) async fn expired_live_task_ids(pool: &PgPool, now_ms: i64) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM tasks WHERE status = 'live' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id")
        .bind(now_ms)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(|r| get(r, 0)).collect()
}

/// Every task below `id` in its delegation tree. `UNION` (not `UNION ALL`) stops at rows already
/// seen, so even a damaged table with a parent cycle cannot loop.
pub(crate) async fn descendant_task_ids(pool: &PgPool, id: &str) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(
        "WITH RECURSIVE below (id, depth, created_at_ms) AS (
             SELECT id, depth, created_at_ms FROM tasks WHERE parent_id = $1
             UNION
             SELECT t.id, t.depth, t.created_at_ms FROM tasks t JOIN below b ON t.parent_id = b.id
         )
         SELECT id FROM below WHERE id <> $1 ORDER BY depth, created_at_ms, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(|r| get(r, 0)).collect()
}

/// Purges expired entries, then records `(issuer, jti)`; `true` if it was new. One statement:
/// the purge skips the pair itself and rows a racing call is purging (it will), so racing calls
/// never wait on each other there; the pair is inserted, or an expired entry of it replaced,
/// and of racing calls the insert's conflict check (or the row lock, re-checked after the wait)
/// lets exactly one win.
pub(crate) async fn consume_jti(pool: &PgPool, issuer: &str, jti: &str, expires_at_ms: i64, now_ms: i64) -> StoreResult<bool> {
    let rows = sqlx::query(
        "WITH purged AS (
             DELETE FROM used_jtis WHERE (issuer, jti) IN (
                 SELECT issuer, jti FROM used_jtis
                 WHERE expires_at_ms < $4 AND NOT (issuer = $1 AND jti = $2)
                 FOR UPDATE SKIP LOCKED)
         )
         INSERT INTO used_jtis (issuer, jti, expires_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (issuer, jti) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
             WHERE used_jtis.expires_at_ms < $4
         RETURNING 1",
    )
    .bind(issuer)
    .bind(jti)
    .bind(expires_at_ms)
    .bind(now_ms)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows.len() == 1)
}

fn task_row(r: &PgRow) -> StoreResult<Task> {
    let id: String = get(r, 0)?;
    let what = format!("task `{id}`");
    let agent: String = get(r, 1)?;
    let status: String = get(r, 2)?;
    let status = TaskStatus::parse(&status).ok_or_else(|| corrupt(&what, format!("unknown status `{status}`")))?;
    let intent: String = get(r, 3)?;
    let depth: i64 = get(r, 9)?;
    let ended: Option<String> = get(r, 10)?;
    Ok(Task {
        agent: AgentName::parse(&agent).map_err(|e| corrupt(&what, e))?,
        intent: from_json(&what, &intent)?,
        ended: ended.as_deref().map(|e| from_json(&what, e)).transpose()?,
        status,
        created_at_ms: get(r, 4)?,
        expires_at_ms: get(r, 5)?,
        mandate_jti: get(r, 6)?,
        parent_id: get(r, 7)?,
        root_id: get(r, 8)?,
        depth: u32::try_from(depth).map_err(|_| corrupt(&what, format!("depth {depth} is out of range")))?,
        id,
    })
}
