//! Meta settings, admin API tokens, agents, trusted issuers and entity data.

use std::str::FromStr;

use mandate_core::{Agent, AgentName, AgentStatus, ApiToken, Issuer, Role, SpiffeId};
use mandate_store::{StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{from_json, to_json};
use crate::error::{Constraint, constraint, corrupt, db};

pub(crate) fn get_meta(c: &Connection, key: &str) -> StoreResult<Option<String>> {
    c.prepare_cached("SELECT value FROM meta WHERE key = ?1").and_then(|mut s| s.query_row([key], |r| r.get(0)).optional()).map_err(db)
}

pub(crate) fn put_meta(c: &Connection, key: &str, value: &str) -> StoreResult<()> {
    c.execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])
        .map_err(db)?;
    Ok(())
}

/// Compare-and-set in one write transaction (the single writer makes it atomic in-process; the
/// `WHERE` makes it atomic against another process too).
pub(crate) fn swap_meta(c: &Connection, key: &str, expected: Option<&str>, value: &str) -> StoreResult<bool> {
    let n = match expected {
        None => c.execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING", [key, value]),
        Some(old) => c.execute("UPDATE meta SET value = ?3 WHERE key = ?1 AND value = ?2", [key, old, value]),
    }
    .map_err(db)?;
    Ok(n == 1)
}

const TOKEN_COLUMNS: &str = "id, role, label, secret_hash, created_at_ms, revoked_at_ms";

pub(crate) fn insert_api_token(c: &Connection, t: &ApiToken) -> StoreResult<()> {
    let sql = format!("INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    match c.execute(&sql, params![t.id, t.role.as_str(), t.label, t.secret_hash, t.created_at_ms, t.revoked_at_ms]) {
        Ok(_) => Ok(()),
        Err(e) if constraint(&e) == Some(Constraint::Unique) => {
            if e.to_string().contains("secret_hash") {
                Err(StoreError::Conflict("an api token with this secret".into()))
            } else {
                Err(StoreError::Conflict(format!("api token `{}`", t.id)))
            }
        }
        Err(e) => Err(db(e)),
    }
}

pub(crate) fn api_token_by_hash(c: &Connection, secret_hash: &str) -> StoreResult<Option<ApiToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ?1");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([secret_hash], token_row).optional()).map_err(db)?;
    row.map(TokenRow::into_token).transpose()
}

pub(crate) fn list_api_tokens(c: &Connection) -> StoreResult<Vec<ApiToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at_ms, id");
    let mut stmt = c.prepare(&sql).map_err(db)?;
    let rows = stmt.query_map([], token_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(TokenRow::into_token)).collect()
}

pub(crate) fn revoke_api_token(c: &Connection, id: &str, at_ms: i64) -> StoreResult<bool> {
    let n =
        c.execute("UPDATE api_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL", params![id, at_ms]).map_err(db)?;
    Ok(n == 1)
}

struct TokenRow {
    id: String,
    role: String,
    label: String,
    secret_hash: String,
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        role: r.get(1)?,
        label: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at_ms: r.get(4)?,
        revoked_at_ms: r.get(5)?,
    })
}

impl TokenRow {
    fn into_token(self) -> StoreResult<ApiToken> {
        let role = Role::from_str(&self.role).map_err(|e| corrupt(&format!("api token `{}`", self.id), e))?;
        Ok(ApiToken {
            id: self.id,
            role,
            label: self.label,
            secret_hash: self.secret_hash,
            created_at_ms: self.created_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        })
    }
}

const AGENT_COLUMNS: &str = "name, spiffe_id, owner, purpose, status, attributes, public_jwk, created_at_ms, updated_at_ms, last_seen_ms";

pub(crate) fn insert_agent(c: &Connection, a: &Agent) -> StoreResult<()> {
    let attributes = to_json("agent attributes", &a.attributes)?;
    let jwk = a.public_jwk.as_ref().map(|j| to_json("agent public key", j)).transpose()?;
    let sql = format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    let values = params![
        a.name.as_str(),
        a.spiffe_id.as_str(),
        a.owner,
        a.purpose,
        a.status.as_str(),
        attributes,
        jwk,
        a.created_at_ms,
        a.updated_at_ms,
        a.last_seen_ms,
    ];
    match c.execute(&sql, values) {
        Ok(_) => Ok(()),
        Err(e) if constraint(&e) == Some(Constraint::Unique) => Err(StoreError::Conflict(format!("agent `{}`", a.name))),
        Err(e) => Err(db(e)),
    }
}

pub(crate) fn get_agent(c: &Connection, name: &str) -> StoreResult<Option<Agent>> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([name], agent_row).optional()).map_err(db)?;
    row.map(AgentRow::into_agent).transpose()
}

pub(crate) fn list_agents(c: &Connection) -> StoreResult<Vec<Agent>> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name");
    let mut stmt = c.prepare(&sql).map_err(db)?;
    let rows = stmt.query_map([], agent_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(AgentRow::into_agent)).collect()
}

pub(crate) fn set_agent_status(c: &Connection, name: &str, status: AgentStatus, at_ms: i64) -> StoreResult<bool> {
    let n = c
        .execute("UPDATE agents SET status = ?2, updated_at_ms = ?3 WHERE name = ?1", params![name, status.as_str(), at_ms])
        .map_err(db)?;
    Ok(n == 1)
}

pub(crate) fn touch_agent(c: &Connection, name: &str, at_ms: i64) -> StoreResult<()> {
    let n = c.execute("UPDATE agents SET last_seen_ms = ?2 WHERE name = ?1", params![name, at_ms]).map_err(db)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("agent `{name}`")));
    }
    Ok(())
}

struct AgentRow {
    name: String,
    spiffe_id: String,
    owner: String,
    purpose: String,
    status: String,
    attributes: String,
    public_jwk: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    last_seen_ms: Option<i64>,
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        name: r.get(0)?,
        spiffe_id: r.get(1)?,
        owner: r.get(2)?,
        purpose: r.get(3)?,
        status: r.get(4)?,
        attributes: r.get(5)?,
        public_jwk: r.get(6)?,
        created_at_ms: r.get(7)?,
        updated_at_ms: r.get(8)?,
        last_seen_ms: r.get(9)?,
    })
}

impl AgentRow {
    fn into_agent(self) -> StoreResult<Agent> {
        let what = format!("agent `{}`", self.name);
        let status = match self.status.as_str() {
            "active" => AgentStatus::Active,
            "disabled" => AgentStatus::Disabled,
            other => return Err(corrupt(&what, format!("unknown status `{other}`"))),
        };
        Ok(Agent {
            name: AgentName::parse(&self.name).map_err(|e| corrupt(&what, e))?,
            spiffe_id: SpiffeId::parse(&self.spiffe_id).map_err(|e| corrupt(&what, e))?,
            owner: self.owner,
            purpose: self.purpose,
            status,
            attributes: from_json(&what, &self.attributes)?,
            public_jwk: self.public_jwk.as_deref().map(|j| from_json(&what, j)).transpose()?,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            last_seen_ms: self.last_seen_ms,
        })
    }
}

const ISSUER_COLUMNS: &str = "issuer, audience, jwks, jwks_url, rules, created_at_ms, max_token_lifetime_secs, allow_token_reuse";

pub(crate) fn upsert_issuer(c: &Connection, i: &Issuer) -> StoreResult<()> {
    let jwks = to_json("issuer key set", &i.jwks)?;
    let rules = to_json("issuer claim rules", &i.rules)?;
    let sql = format!(
        "INSERT INTO issuers ({ISSUER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (issuer) DO UPDATE SET audience = excluded.audience, jwks = excluded.jwks,
             jwks_url = excluded.jwks_url, rules = excluded.rules, created_at_ms = excluded.created_at_ms,
             max_token_lifetime_secs = excluded.max_token_lifetime_secs, allow_token_reuse = excluded.allow_token_reuse"
    );
    let max_lifetime = i.max_token_lifetime_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    c.execute(&sql, params![i.issuer, i.audience, jwks, i.jwks_url, rules, i.created_at_ms, max_lifetime, i.allow_token_reuse])
        .map_err(db)?;
    Ok(())
}

pub(crate) fn get_issuer(c: &Connection, issuer: &str) -> StoreResult<Option<Issuer>> {
    let sql = format!("SELECT {ISSUER_COLUMNS} FROM issuers WHERE issuer = ?1");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([issuer], issuer_row).optional()).map_err(db)?;
    row.map(IssuerRow::into_issuer).transpose()
}

pub(crate) fn list_issuers(c: &Connection) -> StoreResult<Vec<Issuer>> {
    let sql = format!("SELECT {ISSUER_COLUMNS} FROM issuers ORDER BY issuer");
    let mut stmt = c.prepare(&sql).map_err(db)?;
    let rows = stmt.query_map([], issuer_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(IssuerRow::into_issuer)).collect()
}

pub(crate) fn delete_issuer(c: &Connection, issuer: &str) -> StoreResult<bool> {
    let n = c.execute("DELETE FROM issuers WHERE issuer = ?1", [issuer]).map_err(db)?;
    Ok(n == 1)
}

struct IssuerRow {
    issuer: String,
    audience: String,
    jwks: String,
    jwks_url: Option<String>,
    rules: String,
    created_at_ms: i64,
    max_token_lifetime_secs: Option<i64>,
    allow_token_reuse: bool,
}

fn issuer_row(r: &Row<'_>) -> rusqlite::Result<IssuerRow> {
    Ok(IssuerRow {
        issuer: r.get(0)?,
        audience: r.get(1)?,
        jwks: r.get(2)?,
        jwks_url: r.get(3)?,
        rules: r.get(4)?,
        created_at_ms: r.get(5)?,
        max_token_lifetime_secs: r.get(6)?,
        allow_token_reuse: r.get(7)?,
    })
}

impl IssuerRow {
    fn into_issuer(self) -> StoreResult<Issuer> {
        let what = format!("issuer `{}`", self.issuer);
        Ok(Issuer {
            jwks: from_json(&what, &self.jwks)?,
            rules: from_json(&what, &self.rules)?,
            issuer: self.issuer,
            audience: self.audience,
            jwks_url: self.jwks_url,
            created_at_ms: self.created_at_ms,
            max_token_lifetime_secs: self.max_token_lifetime_secs.map(|s| u64::try_from(s).unwrap_or(0)),
            allow_token_reuse: self.allow_token_reuse,
        })
    }
}

pub(crate) fn put_entities(c: &Connection, json: &str) -> StoreResult<()> {
    c.execute("INSERT INTO entities (id, json) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET json = excluded.json", [json]).map_err(db)?;
    Ok(())
}

pub(crate) fn get_entities(c: &Connection) -> StoreResult<Option<String>> {
    c.query_row("SELECT json FROM entities WHERE id = 1", [], |r| r.get(0)).optional().map_err(db)
}
