//! Conformance of the small tables: meta, API tokens, agents, issuers, entities.

use mandate_audit::ChainHead;
use mandate_core::{AgentStatus, ApiToken, ClaimRule, Issuer, Role};
use serde_json::json;

use super::{T0, agent, unique};
use crate::{Store, StoreError, TaskFilter, verify_audit};

/// A store nobody has written to reads as empty everywhere.
pub async fn empty_store(store: &dyn Store) {
    store.ping().await.expect("empty_store: ping");
    assert_eq!(store.audit_head().await.unwrap(), ChainHead::genesis(), "empty_store: head must be genesis");
    assert!(store.read_audit(0, 10).await.unwrap().is_empty(), "empty_store: trail must be empty");
    assert!(store.list_checkpoints().await.unwrap().is_empty(), "empty_store: no checkpoints");
    assert!(store.list_agents().await.unwrap().is_empty(), "empty_store: no agents");
    assert!(store.list_tasks(&TaskFilter::default()).await.unwrap().is_empty(), "empty_store: no tasks");
    assert!(store.live_tasks().await.unwrap().is_empty(), "empty_store: no live tasks");
    assert!(store.list_api_tokens().await.unwrap().is_empty(), "empty_store: no api tokens");
    assert!(store.list_issuers().await.unwrap().is_empty(), "empty_store: no issuers");
    assert_eq!(store.get_entities().await.unwrap(), None, "empty_store: no entities");
    assert!(store.list_secrets().await.unwrap().is_empty(), "empty_store: no secrets");
    let report = verify_audit(store, super::trusted_keys()).await.unwrap().expect("empty_store: empty trail verifies");
    assert_eq!(report.events, 0);
}

/// `put_meta` sets and replaces; `get_meta` reads back or `None`.
pub async fn meta(store: &dyn Store) {
    store.ping().await.expect("meta: ping");
    let key = unique("meta");
    assert_eq!(store.get_meta(&key).await.unwrap(), None, "meta: unknown key reads None");
    store.put_meta(&key, "v1").await.unwrap();
    assert_eq!(store.get_meta(&key).await.unwrap().as_deref(), Some("v1"), "meta: reads back");
    store.put_meta(&key, "v2 ünï\n").await.unwrap();
    assert_eq!(store.get_meta(&key).await.unwrap().as_deref(), Some("v2 ünï\n"), "meta: put replaces");
    store.put_meta(&key, "").await.unwrap();
    assert_eq!(store.get_meta(&key).await.unwrap().as_deref(), Some(""), "meta: empty value is a value");

    // Compare-and-set: only from the expected value, and of racing calls only one wins.
    let key = unique("swap");
    assert!(store.swap_meta(&key, None, "a").await.unwrap(), "meta: swap from unset sets");
    assert!(!store.swap_meta(&key, None, "b").await.unwrap(), "meta: swap from unset refuses a set key");
    assert!(!store.swap_meta(&key, Some("x"), "b").await.unwrap(), "meta: swap from a wrong value refuses");
    assert_eq!(store.get_meta(&key).await.unwrap().as_deref(), Some("a"), "meta: refused swaps change nothing");
    assert!(store.swap_meta(&key, Some("a"), "b").await.unwrap(), "meta: swap from the current value sets");
    assert_eq!(store.get_meta(&key).await.unwrap().as_deref(), Some("b"));
    let racers: Vec<_> = (0..8).map(|i| store.swap_meta(&key, Some("b"), if i % 2 == 0 { "even" } else { "odd" })).collect();
    let won = super::join_all(racers).await.into_iter().map(|r| r.unwrap()).filter(|w| *w).count();
    assert_eq!(won, 1, "meta: of racing swaps from one value exactly one wins");
}

/// Tokens are found by secret hash, conflict on id or hash, list oldest first, revoke once.
pub async fn api_tokens(store: &dyn Store) {
    let token = |id: &str, created_at_ms| ApiToken {
        id: id.to_owned(),
        role: Role::Auditor,
        label: format!("label of {id}"),
        secret_hash: format!("{:0>64}", id.replace('-', "")),
        created_at_ms,
        revoked_at_ms: None,
    };
    let a = token(&unique("tok"), T0 + 2);
    let b = ApiToken { role: Role::Admin, ..token(&unique("tok"), T0 + 1) };
    store.insert_api_token(&a).await.unwrap();
    store.insert_api_token(&b).await.unwrap();

    assert_eq!(store.api_token_by_hash(&a.secret_hash).await.unwrap(), Some(a.clone()), "api_tokens: by hash");
    assert_eq!(store.api_token_by_hash(&"f".repeat(64)).await.unwrap(), None, "api_tokens: unknown hash");

    let same_id = ApiToken { secret_hash: "e".repeat(64), ..a.clone() };
    assert!(
        matches!(store.insert_api_token(&same_id).await, Err(StoreError::Conflict(_))),
        "api_tokens: a second token with the same id must be a conflict"
    );
    let same_hash = ApiToken { id: unique("tok"), ..a.clone() };
    assert!(
        matches!(store.insert_api_token(&same_hash).await, Err(StoreError::Conflict(_))),
        "api_tokens: a second token with the same secret hash must be a conflict"
    );

    let listed: Vec<String> = store.list_api_tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    let pos = |id: &str| listed.iter().position(|x| x == id);
    assert!(matches!((pos(&b.id), pos(&a.id)), (Some(older), Some(newer)) if older < newer), "api_tokens: list holds both, oldest first");

    assert!(store.revoke_api_token(&a.id, T0 + 100).await.unwrap(), "api_tokens: revoke a live token");
    assert!(!store.revoke_api_token(&a.id, T0 + 200).await.unwrap(), "api_tokens: revoke twice is false");
    assert!(!store.revoke_api_token("no-such-token", T0).await.unwrap(), "api_tokens: revoke unknown is false");
    let revoked = store.api_token_by_hash(&a.secret_hash).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(T0 + 100), "api_tokens: the first revocation time stays");
    let other = store.api_token_by_hash(&b.secret_hash).await.unwrap().unwrap();
    assert_eq!(other.revoked_at_ms, None, "api_tokens: revoking one leaves the other");
}

/// Agents round-trip, conflict by name, list by name, change status, and are touched.
pub async fn agents(store: &dyn Store) {
    let z = agent(&unique("z-agent"));
    let a = agent(&unique("a-agent"));
    store.insert_agent(&z).await.unwrap();
    let mut bare = a.clone();
    bare.attributes.clear();
    bare.public_jwk = None;
    store.insert_agent(&bare).await.unwrap();

    assert_eq!(store.get_agent(z.name.as_str()).await.unwrap(), Some(z.clone()), "agents: round-trip");
    assert_eq!(store.get_agent(a.name.as_str()).await.unwrap(), Some(bare.clone()), "agents: round-trip bare");
    assert_eq!(store.get_agent("no-such-agent").await.unwrap(), None, "agents: unknown reads None");
    assert!(
        matches!(store.insert_agent(&z).await, Err(StoreError::Conflict(_))),
        "agents: a second agent with the same name must be a conflict"
    );

    let names: Vec<String> = store.list_agents().await.unwrap().into_iter().map(|a| a.name.to_string()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "agents: list is ordered by name");
    assert!(names.contains(&z.name.to_string()) && names.contains(&a.name.to_string()), "agents: list holds both");

    assert!(store.set_agent_status(z.name.as_str(), AgentStatus::Disabled, T0 + 10).await.unwrap(), "agents: disable a known agent");
    let disabled = store.get_agent(z.name.as_str()).await.unwrap().unwrap();
    assert_eq!((disabled.status, disabled.updated_at_ms), (AgentStatus::Disabled, T0 + 10), "agents: status set");
    assert_eq!(disabled.created_at_ms, z.created_at_ms, "agents: created_at stays");
    assert!(store.set_agent_status(z.name.as_str(), AgentStatus::Active, T0 + 11).await.unwrap());
    assert_eq!(store.get_agent(z.name.as_str()).await.unwrap().unwrap().status, AgentStatus::Active);
    assert!(
        !store.set_agent_status("no-such-agent", AgentStatus::Disabled, T0).await.unwrap(),
        "agents: status of an unknown agent is false"
    );

    store.touch_agent(a.name.as_str(), T0 + 20).await.unwrap();
    let touched = store.get_agent(a.name.as_str()).await.unwrap().unwrap();
    assert_eq!(touched.last_seen_ms, Some(T0 + 20), "agents: touch sets last_seen_ms");
    assert_eq!(touched.updated_at_ms, bare.updated_at_ms, "agents: touch is not an update");
    assert!(
        matches!(store.touch_agent("no-such-agent", T0).await, Err(StoreError::NotFound(_))),
        "agents: touching an unknown agent is not found"
    );
}

/// Issuers are upserted, listed by `iss`, and deleted once.
pub async fn issuers(store: &dyn Store) {
    let name = format!("https://{}.example.com", unique("idp"));
    let mut issuer = Issuer {
        issuer: name.clone(),
        audience: "mandate".into(),
        jwks: json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}]}),
        jwks_url: None,
        rules: vec![ClaimRule::new("sub", "system:serviceaccount:prod:{agent}").unwrap()],
        created_at_ms: T0,
        max_token_lifetime_secs: None,
        allow_token_reuse: false,
    };
    store.upsert_issuer(&issuer).await.unwrap();
    assert_eq!(store.get_issuer(&name).await.unwrap(), Some(issuer.clone()), "issuers: round-trip");

    issuer.audience = "mandate-2".into();
    issuer.jwks_url = Some(format!("{name}/jwks.json"));
    issuer.rules.push(ClaimRule::new("email", "{agent}@agents.example.com").unwrap());
    issuer.max_token_lifetime_secs = Some(3600);
    issuer.allow_token_reuse = true;
    store.upsert_issuer(&issuer).await.unwrap();
    assert_eq!(store.get_issuer(&name).await.unwrap(), Some(issuer.clone()), "issuers: upsert replaces");

    let other = Issuer { issuer: format!("{name}/a"), ..issuer.clone() };
    store.upsert_issuer(&other).await.unwrap();
    let listed: Vec<String> = store.list_issuers().await.unwrap().into_iter().map(|i| i.issuer).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "issuers: list is ordered by iss");
    assert_eq!(listed.iter().filter(|i| i.starts_with(&name)).count(), 2, "issuers: one row per iss");

    assert!(store.delete_issuer(&name).await.unwrap(), "issuers: delete a known issuer");
    assert!(!store.delete_issuer(&name).await.unwrap(), "issuers: delete twice is false");
    assert_eq!(store.get_issuer(&name).await.unwrap(), None, "issuers: deleted reads None");
    assert!(store.get_issuer(&other.issuer).await.unwrap().is_some(), "issuers: delete removes only one");
}

/// Entity data is stored as given and replaced whole.
pub async fn entities(store: &dyn Store) {
    let first = r#"[{"uid":{"type":"Mandate::User","id":"bob"},"attrs":{},"parents":[]}]"#;
    store.put_entities(first).await.unwrap();
    assert_eq!(store.get_entities().await.unwrap().as_deref(), Some(first), "entities: reads back as given");
    let second = "[ ]";
    store.put_entities(second).await.unwrap();
    assert_eq!(store.get_entities().await.unwrap().as_deref(), Some(second), "entities: put replaces");
}
