//! Meta settings, admin API tokens, agents, trusted issuers and entity data.

use std::str::FromStr;

use mandate_core::{Agent, AgentName, AgentStatus, ApiToken, Issuer, Role, SpiffeId};
use mandate_store::{Change, StoreError, StoreResult};
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::{from_json, get, notifying, to_json};
use crate::error::{Constraint, constraint, corrupt, db};
use crate::notify::Envelope;

pub(crate) async fn get_meta(pool: &PgPool, key: &str) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(pool).await.map_err(db)?;
    row.map(|r| get(&r, 0)).transpose()
}

pub(crate) async fn put_meta(pool: &PgPool, env: &Envelope, key: &str, value: &str) -> StoreResult<()> {
    const SQL: &str =
        notifying!("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING 1", 3);
    sqlx::query(SQL).bind(key).bind(value).bind(env.payloads(&Change::Meta(key.to_owned()))).execute(pool).await.map_err(db)?;
    Ok(())
}

/// Compare-and-set in one statement: the insert's conflict check, or the update's re-check of
/// `value` after waiting for a racing writer's row lock, lets exactly one of racing calls win.
pub(crate) async fn swap_meta(pool: &PgPool, env: &Envelope, key: &str, expected: Option<&str>, value: &str) -> StoreResult<bool> {
    const SET_IF_UNSET: &str = notifying!("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING 1", 3);
    const SET_IF_EQUAL: &str = notifying!("UPDATE meta SET value = $2 WHERE key = $1 AND value = $3 RETURNING 1", 4);
    let payloads = env.payloads(&Change::Meta(key.to_owned()));
    let q = match expected {
        None => sqlx::query(SET_IF_UNSET).bind(key).bind(value).bind(payloads),
        Some(old) => sqlx::query(SET_IF_EQUAL).bind(key).bind(value).bind(old).bind(payloads),
    };
    Ok(!q.fetch_all(pool).await.map_err(db)?.is_empty())
}

const TOKEN_COLUMNS: &str = "id, role, label, secret_hash, created_at_ms, revoked_at_ms";

pub(crate) async fn insert_api_token(pool: &PgPool, env: &Envelope, t: &ApiToken) -> StoreResult<()> {
    const SQL: &str = notifying!(
        "INSERT INTO api_tokens (id, role, label, secret_hash, created_at_ms, revoked_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING 1",
        7
    );
    let result = sqlx::query(SQL)
        .bind(&t.id)
        .bind(t.role.as_str())
        .bind(&t.label)
        .bind(&t.secret_hash)
        .bind(t.created_at_ms)
        .bind(t.revoked_at_ms)
        .bind(env.payloads(&Change::ApiTokens))
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(match constraint(&e) {
            Some(Constraint::Unique("api_tokens_secret_hash_key")) => StoreError::Conflict("an api token with this secret".into()),
            Some(Constraint::Unique(_)) => StoreError::Conflict(format!("api token `{}`", t.id)),
            _ => db(e),
        }),
    }
}

pub(crate) async fn api_token_by_hash(pool: &PgPool, secret_hash: &str) -> StoreResult<Option<ApiToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = $1");
    let row = sqlx::query(&sql).bind(secret_hash).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(token_row).transpose()
}

pub(crate) async fn list_api_tokens(pool: &PgPool) -> StoreResult<Vec<ApiToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at_ms, id");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(token_row).collect()
}

pub(crate) async fn revoke_api_token(pool: &PgPool, env: &Envelope, id: &str, at_ms: i64) -> StoreResult<bool> {
    const SQL: &str = notifying!("UPDATE api_tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL RETURNING 1", 3);
    let rows = sqlx::query(SQL).bind(id).bind(at_ms).bind(env.payloads(&Change::ApiTokens)).fetch_all(pool).await.map_err(db)?;
    Ok(!rows.is_empty())
}

fn token_row(r: &PgRow) -> StoreResult<ApiToken> {
    let id: String = get(r, 0)?;
    let role: String = get(r, 1)?;
    let role = Role::from_str(&role).map_err(|e| corrupt(&format!("api token `{id}`"), e))?;
    Ok(ApiToken { id, role, label: get(r, 2)?, secret_hash: get(r, 3)?, created_at_ms: get(r, 4)?, revoked_at_ms: get(r, 5)? })
}

const AGENT_COLUMNS: &str = "name, spiffe_id, owner, purpose, status, attributes, public_jwk, created_at_ms, updated_at_ms, last_seen_ms";

pub(crate) async fn insert_agent(pool: &PgPool, env: &Envelope, a: &Agent) -> StoreResult<()> {
    const SQL: &str = notifying!(
        "INSERT INTO agents (name, spiffe_id, owner, purpose, status, attributes, public_jwk, created_at_ms, updated_at_ms, last_seen_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING 1",
        11
    );
    let attributes = to_json("agent attributes", &a.attributes)?;
    let jwk = a.public_jwk.as_ref().map(|j| to_json("agent public key", j)).transpose()?;
    let result = sqlx::query(SQL)
        .bind(a.name.as_str())
        .bind(a.spiffe_id.as_str())
        .bind(&a.owner)
        .bind(&a.purpose)
        .bind(a.status.as_str())
        .bind(attributes)
        .bind(jwk)
        .bind(a.created_at_ms)
        .bind(a.updated_at_ms)
        .bind(a.last_seen_ms)
        .bind(env.payloads(&Change::Agent(a.name.to_string())))
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(constraint(&e), Some(Constraint::Unique(_))) => Err(StoreError::Conflict(format!("agent `{}`", a.name))),
        Err(e) => Err(db(e)),
    }
}

pub(crate) async fn get_agent(pool: &PgPool, name: &str) -> StoreResult<Option<Agent>> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE name = $1");
    let row = sqlx::query(&sql).bind(name).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(agent_row).transpose()
}

pub(crate) async fn list_agents(pool: &PgPool) -> StoreResult<Vec<Agent>> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(agent_row).collect()
}

pub(crate) async fn set_agent_status(pool: &PgPool, env: &Envelope, name: &str, status: AgentStatus, at_ms: i64) -> StoreResult<bool> {
    const SQL: &str = notifying!("UPDATE agents SET status = $2, updated_at_ms = $3 WHERE name = $1 RETURNING 1", 4);
    let rows = sqlx::query(SQL)
        .bind(name)
        .bind(status.as_str())
        .bind(at_ms)
        .bind(env.payloads(&Change::Agent(name.to_owned())))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok(!rows.is_empty())
}

pub(crate) async fn touch_agent(pool: &PgPool, name: &str, at_ms: i64) -> StoreResult<()> {
    let done = sqlx::query("UPDATE agents SET last_seen_ms = $2 WHERE name = $1").bind(name).bind(at_ms).execute(pool).await.map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("agent `{name}`")));
    }
    Ok(())
}

fn agent_row(r: &PgRow) -> StoreResult<Agent> {
    let name: String = get(r, 0)?;
    let what = format!("agent `{name}`");
    let status: String = get(r, 4)?;
    let status = match status.as_str() {
        "active" => AgentStatus::Active,
        "disabled" => AgentStatus::Disabled,
        other => return Err(corrupt(&what, format!("unknown status `{other}`"))),
    };
    let spiffe_id: String = get(r, 1)?;
    let attributes: String = get(r, 5)?;
    let public_jwk: Option<String> = get(r, 6)?;
    Ok(Agent {
        name: AgentName::parse(&name).map_err(|e| corrupt(&what, e))?,
        spiffe_id: SpiffeId::parse(&spiffe_id).map_err(|e| corrupt(&what, e))?,
        owner: get(r, 2)?,
        purpose: get(r, 3)?,
        status,
        attributes: from_json(&what, &attributes)?,
        public_jwk: public_jwk.as_deref().map(|j| from_json(&what, j)).transpose()?,
        created_at_ms: get(r, 7)?,
        updated_at_ms: get(r, 8)?,
        last_seen_ms: get(r, 9)?,
    })
}

const ISSUER_COLUMNS: &str = "issuer, audience, jwks, jwks_url, rules, created_at_ms, max_token_lifetime_secs, allow_token_reuse";

pub(crate) async fn upsert_issuer(pool: &PgPool, env: &Envelope, i: &Issuer) -> StoreResult<()> {
    const SQL: &str = notifying!(
        "INSERT INTO issuers (issuer, audience, jwks, jwks_url, rules, created_at_ms, max_token_lifetime_secs, allow_token_reuse)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (issuer) DO UPDATE SET audience = excluded.audience, jwks = excluded.jwks,
             jwks_url = excluded.jwks_url, rules = excluded.rules, created_at_ms = excluded.created_at_ms,
             max_token_lifetime_secs = excluded.max_token_lifetime_secs, allow_token_reuse = excluded.allow_token_reuse
         RETURNING 1",
        9
    );
    let jwks = to_json("issuer key set", &i.jwks)?;
    let rules = to_json("issuer claim rules", &i.rules)?;
    sqlx::query(SQL)
        .bind(&i.issuer)
        .bind(&i.audience)
        .bind(jwks)
        .bind(&i.jwks_url)
        .bind(rules)
        .bind(i.created_at_ms)
        .bind(i.max_token_lifetime_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX)))
        .bind(i.allow_token_reuse)
        .bind(env.payloads(&Change::Issuers))
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn get_issuer(pool: &PgPool, issuer: &str) -> StoreResult<Option<Issuer>> {
    let sql = format!("SELECT {ISSUER_COLUMNS} FROM issuers WHERE issuer = $1");
    let row = sqlx::query(&sql).bind(issuer).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(issuer_row).transpose()
}

pub(crate) async fn list_issuers(pool: &PgPool) -> StoreResult<Vec<Issuer>> {
    let sql = format!("SELECT {ISSUER_COLUMNS} FROM issuers ORDER BY issuer");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(issuer_row).collect()
}

pub(crate) async fn delete_issuer(pool: &PgPool, env: &Envelope, issuer: &str) -> StoreResult<bool> {
    const SQL: &str = notifying!("DELETE FROM issuers WHERE issuer = $1 RETURNING 1", 2);
    let rows = sqlx::query(SQL).bind(issuer).bind(env.payloads(&Change::Issuers)).fetch_all(pool).await.map_err(db)?;
    Ok(!rows.is_empty())
}

fn issuer_row(r: &PgRow) -> StoreResult<Issuer> {
    let issuer: String = get(r, 0)?;
    let what = format!("issuer `{issuer}`");
    let jwks: String = get(r, 2)?;
    let rules: String = get(r, 4)?;
    let max_lifetime: Option<i64> = get(r, 6)?;
    Ok(Issuer {
        jwks: from_json(&what, &jwks)?,
        rules: from_json(&what, &rules)?,
        issuer,
        audience: get(r, 1)?,
        jwks_url: get(r, 3)?,
        created_at_ms: get(r, 5)?,
        max_token_lifetime_secs: max_lifetime.map(|s| u64::try_from(s).unwrap_or(0)),
        allow_token_reuse: get(r, 7)?,
    })
}

pub(crate) async fn put_entities(pool: &PgPool, env: &Envelope, json: &str) -> StoreResult<()> {
    const SQL: &str =
        notifying!("INSERT INTO entities (id, json) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET json = excluded.json RETURNING 1", 2);
    sqlx::query(SQL).bind(json).bind(env.payloads(&Change::Entities)).execute(pool).await.map_err(db)?;
    Ok(())
}

pub(crate) async fn get_entities(pool: &PgPool) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT json FROM entities WHERE id = 1").fetch_optional(pool).await.map_err(db)?;
    row.map(|r| get(&r, 0)).transpose()
}
