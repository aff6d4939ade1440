//! `mandate demo`: the whole story on a laptop with zero set-up. A throwaway server (embedded
//! store, generated keys, the starter policies) on a free loopback port with the gateway
//! mounted in front of the bundled demo MCP tool server; an agent that attests, opens a task,
//! is allowed, denied out of intent, denied by policy, held for approval; uses tools through
//! the gateway (a filtered list, a brokered secret it never sees), delegates a read-only part of
//! its task to a second agent (a wider request refused), is revoked mid-session (the delegated
//! task with it) and switched off; then the evidence, verified.

use std::process::ExitCode;

use anyhow::Context;
use mandate_client::Client;
use mandate_proto::admin::RegisterAgentRequest;
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse};
use serde_json::{Value, json};

use crate::cli::DemoArgs;
use crate::config::ServeConfig;

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile_dir()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| tmp.clone());
    let admin_secret = format!("mdt_demo_{}", uuid::Uuid::new_v4().simple());
    // The demo tool server requires a bearer secret: only the gateway, which injects the
    // brokered secret, can use it. Nobody else ever sees the value.
    let tool_secret = format!("demo-upstream-{}", uuid::Uuid::new_v4().simple());
    let tools_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tools = mandate_demo_tools::spawn(
        tools_listener,
        mandate_demo_tools::DemoToolsOptions { require_bearer: Some(tool_secret.clone()), ..Default::default() },
    )?;
    let gateway = mandate_gateway::GatewayFile::from_toml(&demo_gateway_toml(&tools.mcp_url()))
        .and_then(|f| f.check())
        .map_err(|e| anyhow::anyhow!("the demo's gateway config: {e}"))?;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.clone(),
        policy_dir: None,
        shadow_policy_dir: None,
        issuer_url: None,
        trust_domain: "demo.mandate.local".into(),
        audience: "mandate".into(),
        environment: "production".into(),
        tls: None,
        allow_insecure_http: false,
        default_ttl_secs: 600,
        max_ttl_secs: 3600,
        max_delegation_depth: 3,
        attestation_max_lifetime_secs: 300,
        leeway_secs: 60,
        checkpoint_every: 8,
        checkpoint_interval_secs: 1,
        max_body_bytes: 64 * 1024,
        approvals: Default::default(),
        database: crate::config::DatabaseSettings { url: None, max_connections: 16, acquire_timeout_secs: 5 },
        gateway: Some(gateway),
    };
    let running = crate::serve::start(cfg, Some(admin_secret.clone()), false).await?;
    let url = running.url.clone();
    let result = story(&url, &admin_secret, &tool_secret, &tools).await;
    running.shutdown().await?;
    let _ = tools.shutdown().await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        println!("\nthe demo's data directory is kept at {}", data_dir.display());
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The embedded gateway in front of the demo tool server: one table per tool, the brokered
/// secret injected as the upstream's bearer.
fn demo_gateway_toml(mcp_url: &str) -> String {
    format!(
        r#"
# The demo shows the held call's approval id at once rather than waiting for a person.
approval_wait_secs = 0
[[upstream]]
name = "demo"
type = "mcp"
url = "{mcp_url}"
[upstream.inject]
header = "Authorization"
secret = "demo-tools-token"
format = "Bearer {{}}"
[upstream.tools."tickets.search"]
kind = "read"
classification = "internal"
[upstream.tools."tickets.export"]
kind = "read"
classification = "confidential"
[upstream.tools."email.send"]
kind = "write"
classification = "internal"
log_arguments = true
redact = ["body"]
[upstream.tools."deploy.production"]
kind = "execute"
classification = "internal"
"#
    )
}

/// A minimal MCP client (2026-07-28, stateless streamable HTTP), so the demo shows the wire:
/// one POST per request, the mandate as the bearer, routing headers that match the body.
struct McpAgent {
    http: reqwest::Client,
    url: String,
    mandate: String,
    next: u64,
}

impl McpAgent {
    async fn rpc(&mut self, method: &str, mut params: Value) -> anyhow::Result<Value> {
        self.next += 1;
        if let Value::Object(p) = &mut params {
            p.insert(
                "_meta".into(),
                json!({
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientInfo": { "name": "demo-agent", "version": "1" },
                    "io.modelcontextprotocol/clientCapabilities": {}
                }),
            );
        }
        let mut req = self
            .http
            .post(&self.url)
            .bearer_auth(&self.mandate)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .json(&json!({ "jsonrpc": "2.0", "id": self.next, "method": method, "params": params }));
        if let Some(name) = params.get("name").and_then(Value::as_str) {
            req = req.header("mcp-name", name);
        }
        let resp = req.send().await.context("the gateway did not answer")?;
        resp.json().await.context("the gateway's answer is not JSON")
    }

    async fn call(&mut self, tool: &str, args: Value) -> anyhow::Result<Value> {
        self.rpc("tools/call", json!({ "name": tool, "arguments": args })).await
    }
}

/// One line for a tool call's outcome.
fn show_call(label: &str, r: &Value) {
    match (r.get("result"), r.get("error")) {
        (Some(res), _) if res.get("isError") != Some(&json!(true)) => println!("   ALLOW {label:<46} forwarded, upstream answered"),
        (Some(_), _) => println!("   ALLOW {label:<46} forwarded, the tool reported an error"),
        (_, Some(e)) => {
            let reason = e.pointer("/data/reason").and_then(Value::as_str).unwrap_or("");
            let dec = e.pointer("/data/decision_id").and_then(Value::as_str).map(|d| format!("  ({d})")).unwrap_or_default();
            println!("   DENY  {label:<46} {reason}{dec}");
        }
        _ => println!("   ????  {label:<46} {r}"),
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mandate-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn step(n: u32, title: &str) {
    println!("\n── {n}. {title}");
}

fn show(label: &str, r: &EvaluationResponse) {
    let ctx = r.context.clone().unwrap_or(Value::Null);
    let reason = ctx.get("reason").and_then(Value::as_str).unwrap_or("");
    let policies = ctx
        .get("policies")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let verdict = if r.decision { "ALLOW" } else { "DENY " };
    let by = if policies.is_empty() { String::new() } else { format!("  [{policies}]") };
    println!("   {verdict} {label:<46} {reason}{by}");
}

fn ask(spiffe: &str, mandate: &str, action: &str, rtype: &str, rid: &str, class: &str) -> anyhow::Result<EvaluationRequest> {
    Ok(serde_json::from_value(json!({
        "subject": { "type": "agent", "id": spiffe, "properties": { "mandate": mandate } },
        "action": { "name": action },
        "resource": { "type": rtype, "id": rid, "properties": { "classification": class } },
        "context": { "environment": "production", "risk": 2 }
    }))?)
}

async fn story(url: &str, admin_secret: &str, tool_secret: &str, tools: &mandate_demo_tools::DemoToolsHandle) -> anyhow::Result<()> {
    let admin = Client::new(url, Some(admin_secret.to_owned()))?;
    let anon = Client::new(url, None)?;
    println!("Mandate demo — a throwaway control plane at {url}");
    println!("(embedded SQLite store, freshly generated Ed25519 signing key, the starter Cedar policies)");

    step(1, "Register an agent: a workload identity with a named owner and a purpose");
    let (private_jwk, public_jwk) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519)?;
    let agent = admin
        .register_agent(&RegisterAgentRequest {
            name: "support-bot".into(),
            owner: "alice@example.com".into(),
            purpose: "Summarise and answer customer support tickets".into(),
            public_jwk: Some(public_jwk),
            attributes: [("team".to_owned(), "support".to_owned())].into(),
        })
        .await?;
    println!("   agent support-bot → {} (owner alice@example.com)", agent.spiffe_id);
    let pep_token = admin.create_token("pep", "demo gateway").await?;
    let pep = Client::new(url, Some(pep_token.token))?;
    println!("   an enforcement point gets its own `pep` API token: it may ask for decisions, nothing else");

    step(2, "The agent attests and declares its task's intent (RFC 8693 token exchange + RFC 9396)");
    let intent = json!({
        "type": "agent_task",
        "purpose": "Answer ticket 4411 and refund the duplicate charge",
        "actions": ["tickets.read", "tickets.search", "tickets.write", "payments.refund"],
        "resources": ["ticket:*", "payment:*"],
        "max_classification": "internal",
        "lifetime_seconds": 300,
        "on_behalf_of": "bob@example.com"
    });
    let opened = crate::commands::agent_mandate(&anon, "support-bot", &private_jwk, &intent).await?;
    let mandate = opened.access_token.clone();
    let task = opened.task_id.clone();
    println!("   policy `tasks.open-up-to-confidential` let it open task {task}");
    println!("   mandate: EdDSA JWT (typ at+jwt), expires in {} s, scope \"{}\"", opened.expires_in, opened.scope);
    println!("   {}…", mandate.chars().take(72).collect::<String>());

    step(3, "Every call is decided at request time (AuthZEN), the intent is a hard ceiling");
    let spiffe = agent.spiffe_id.clone();
    show(
        "tickets.read  ticket:4411 (internal)",
        &pep.evaluate(&ask(&spiffe, &mandate, "tickets.read", "ticket", "4411", "internal")?).await?,
    );
    show(
        "tickets.export ticket:4411 (internal)",
        &pep.evaluate(&ask(&spiffe, &mandate, "tickets.export", "ticket", "4411", "internal")?).await?,
    );
    show(
        "tickets.read  ticket:9000 (confidential)",
        &pep.evaluate(&ask(&spiffe, &mandate, "tickets.read", "ticket", "9000", "confidential")?).await?,
    );
    show(
        "tickets.read  invoice:17 (internal)",
        &pep.evaluate(&ask(&spiffe, &mandate, "tickets.read", "invoice", "17", "internal")?).await?,
    );
    println!("   (outside the declared actions, classification or resources: denied before any policy runs)");

    step(4, "Inside the intent, policy still decides: read / write / execute are separate");
    show(
        "tickets.write ticket:4411 (internal)",
        &pep.evaluate(&ask(&spiffe, &mandate, "tickets.write", "ticket", "4411", "internal")?).await?,
    );
    println!("   (writes need an agent marked `writer=true`; support-bot is not)");
    show(
        "payments.refund payment:991 (internal)",
        &pep.evaluate(&ask(&spiffe, &mandate, "payments.refund", "payment", "991", "internal")?).await?,
    );
    println!("   (money moves only after a person approves the exact call: an obligation from policy)");

    step(5, "Delegation: hand a read-only part of the task to another agent, which can only narrow");
    let (research_jwk, research_pub) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519)?;
    let research = admin
        .register_agent(&RegisterAgentRequest {
            name: "research-bot".into(),
            owner: "alice@example.com".into(),
            purpose: "Read tickets and summarise them for other agents".into(),
            public_jwk: Some(research_pub),
            attributes: Default::default(),
        })
        .await?;
    let sub_intent = json!({
        "type": "agent_task",
        "purpose": "Summarise ticket 4411 for support-bot",
        "actions": ["tickets.read"],
        "resources": ["ticket:4411"],
        "max_classification": "internal"
    });
    let child = crate::commands::delegate(&anon, &mandate, "research-bot", &research_jwk, &sub_intent).await?;
    println!(
        "   support-bot delegated task {} to research-bot (RFC 8693: its mandate as subject token, research-bot's attestation as actor token)",
        child.task_id
    );
    println!(
        "   the child's mandate: sub = support-bot (whose authority), act.sub = research-bot (who acts), expires with the parent at the latest"
    );
    let rid = research.spiffe_id.clone();
    show(
        "research-bot tickets.read ticket:4411",
        &pep.evaluate(&ask(&rid, &child.access_token, "tickets.read", "ticket", "4411", "internal")?).await?,
    );
    show(
        "research-bot tickets.write ticket:4411",
        &pep.evaluate(&ask(&rid, &child.access_token, "tickets.write", "ticket", "4411", "internal")?).await?,
    );
    let wider = json!({ "type": "agent_task", "purpose": "Export it too", "actions": ["tickets.read", "tickets.export"],
                        "resources": ["ticket:4411"], "max_classification": "internal" });
    match crate::commands::delegate(&anon, &mandate, "research-bot", &research_jwk, &wider).await {
        Ok(_) => anyhow::bail!("a wider sub-intent was delegated"),
        Err(e) => println!("   a wider sub-intent is refused: {e}"),
    }

    step(6, "Tools through the gateway: MCP at /mcp/demo, every call decided, the secret brokered");
    admin.put_secret("demo-tools-token", tool_secret, "bearer of the demo tool server").await?;
    println!("   `mandate secret put demo-tools-token`: sealed with AES-256-GCM; the API shows only metadata");
    let gw_intent = json!({
        "type": "agent_task",
        "purpose": "Find the checkout tickets and tell the customer",
        "actions": ["demo.tickets.search", "demo.email.send", "demo.deploy.production"],
        "resources": ["*"],
        "max_classification": "internal",
        "lifetime_seconds": 300
    });
    let gw_task = crate::commands::agent_mandate(&anon, "support-bot", &private_jwk, &gw_intent).await?;
    let mut agent_mcp =
        McpAgent { http: reqwest::Client::new(), url: format!("{url}/mcp/demo"), mandate: gw_task.access_token.clone(), next: 0 };
    let discovered = agent_mcp.rpc("server/discover", json!({})).await?;
    let server_name = discovered.pointer("/result/_meta/io.modelcontextprotocol~1serverInfo/name").and_then(Value::as_str).unwrap_or("?");
    println!("   server/discover → {server_name}, through the gateway (the agent's mandate never goes upstream)");
    let listed = agent_mcp.rpc("tools/list", json!({})).await?;
    let names: Vec<&str> = listed
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!("   tools/list → {} of {} tools: {}", names.len(), mandate_demo_tools::TOOL_NAMES.len(), names.join(", "));
    println!("   (one batch decision: tickets.export is outside the intent, email.send needs a writer)");
    show_call("tools/call tickets.search", &agent_mcp.call("tickets.search", json!({ "query": "checkout" })).await?);
    println!("   (the upstream refuses requests without its bearer: the gateway injected it)");
    show_call("tools/call tickets.export", &agent_mcp.call("tickets.export", json!({ "ids": ["T-42"] })).await?);
    show_call(
        "tools/call email.send",
        &agent_mcp.call("email.send", json!({ "to": "ops@initech.example", "subject": "T-42", "body": "We are on it." })).await?,
    );
    let deploy = json!({ "service": "web", "version": "4.12.2" });
    let held = agent_mcp.call("deploy.production", deploy.clone()).await?;
    show_call("tools/call deploy.production", &held);
    println!(
        "   upstream effects: {} email(s) sent, {} deployment(s): nothing that was refused reached it",
        tools.state().outbox().len(),
        tools.state().deployments().len()
    );
    if let Some(approval_id) = held.pointer("/error/data/approval_id").and_then(Value::as_str) {
        let approver = admin.create_token("approver", "dana@example.com").await?;
        let approver = Client::new(url, Some(approver.token))?;
        let pending = approver.list_approvals(Some("pending"), None).await?;
        if let Some(a) = pending.iter().find(|a| a.id == approval_id) {
            println!("   `mandate approval list` → {} {} {}", a.id, a.action, mandate_audit::canonical_json(&a.arguments));
        }
        let a = approver.approve(approval_id, Some("ok for change CHG-4411".into())).await?;
        println!("   `mandate approval approve` by {} → {}", a.decided_by_label.as_deref().unwrap_or("?"), a.status);
        show_call("tools/call deploy.production (approved)", &agent_mcp.call("deploy.production", deploy.clone()).await?);
        show_call("tools/call deploy.production (again)", &agent_mcp.call("deploy.production", deploy).await?);
        println!("   (a granted approval covers the identical call once; {} deployment(s) now)", tools.state().deployments().len());
    }
    let started = std::time::Instant::now();
    admin.revoke_task(&gw_task.task_id, Some("demo: revoked mid-session".into())).await?;
    show_call("tools/call tickets.search (after revoke)", &agent_mcp.call("tickets.search", json!({ "query": "checkout" })).await?);
    println!("   revoke → next tool call refused in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    let gw_trail = admin.audit_trail(&gw_task.task_id).await?;
    for e in gw_trail.events.iter().filter(|e| e.get("kind").and_then(Value::as_str) == Some("tool.call")) {
        println!("   {}", crate::commands::render_event(e));
    }

    step(7, "Revoke the task: effective on the very next request, not at token expiry");
    let started = std::time::Instant::now();
    admin.revoke_task(&task, Some("demo: ticket closed by a human".into())).await?;
    let after = pep.evaluate(&ask(&spiffe, &mandate, "tickets.read", "ticket", "4411", "internal")?).await?;
    show("tickets.read  ticket:4411 (internal)", &after);
    println!("   revoke → next decision refused in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    let intro = pep.introspect(&mandate).await?;
    println!("   introspection (RFC 7662): active = {}", intro.active);
    show(
        "research-bot tickets.read (after the parent's revoke)",
        &pep.evaluate(&ask(&rid, &child.access_token, "tickets.read", "ticket", "4411", "internal")?).await?,
    );
    println!("   (revoking a task revokes every task delegated from it, at once)");

    step(8, "The kill switch: disable the agent, every live task dies with it");
    let second = crate::commands::agent_mandate(&anon, "support-bot", &private_jwk, &intent).await?;
    show(
        "tickets.read  (new task)",
        &pep.evaluate(&ask(&spiffe, &second.access_token, "tickets.read", "ticket", "4411", "internal")?).await?,
    );
    let disabled = admin.disable_agent("support-bot").await?;
    println!("   agent disabled; {} live task(s) revoked", disabled.revoked_tasks.len());
    show(
        "tickets.read  (same mandate)",
        &pep.evaluate(&ask(&spiffe, &second.access_token, "tickets.read", "ticket", "4411", "internal")?).await?,
    );
    match crate::commands::agent_mandate(&anon, "support-bot", &private_jwk, &intent).await {
        Ok(_) => anyhow::bail!("a disabled agent was given a mandate"),
        Err(e) => println!("   a new attestation is refused: {e}"),
    }

    step(9, "The evidence trail of the first task, from the control plane's own record");
    let trail = admin.audit_trail(&task).await?;
    for e in &trail.events {
        println!("   {}", crate::commands::render_event(e));
    }

    step(10, "Verify the whole trail: hash chain + Ed25519-signed checkpoints");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let v = admin.audit_verify().await.context("verify the trail")?;
    if !v.ok {
        anyhow::bail!("the audit trail did not verify: {:?}", v);
    }
    println!(
        "   ok: {} events, {} signed checkpoints, head #{} {}",
        v.events,
        v.checkpoints,
        v.last_seq.unwrap_or(0),
        v.last_hash.unwrap_or_default()
    );
    println!("\nDone. Try it for real: `mandate serve`, then see README.md.");
    Ok(())
}
