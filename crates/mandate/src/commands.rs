//! What each subcommand does. Admin subcommands are thin: build a request, call the typed
//! client, print the answer (text for people, `--json` for scripts).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use mandate_client::Client;
use mandate_policy::{EntityData, PolicySnapshot, PolicySources};
use mandate_proto::admin::{AddIssuerRequest, ClaimRuleView, RegisterAgentRequest, SecretView};
use mandate_token::AgentKeyAlg;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cli::{
    AgentCmd, ApprovalCmd, AuditCmd, Command, EntitiesCmd, ExportFormat, GatewayAction, IssuerCmd, KeyAlg, KeyCmd, LeaseCmd, PolicyCmd,
    Remote, SecretCmd, TaskCmd, TokenCmd,
};

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            let admin = std::env::var("MANDATE_ADMIN_TOKEN").ok();
            let running = crate::serve::start(cfg, admin, true).await?;
            if let Some(t) = &running.bootstrap_token {
                eprintln!("bootstrap admin token (shown once, store it now): {t}");
            }
            println!("mandate: listening on {}", running.url);
            running.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(cmd) => agent(cmd).await,
        Command::Token(cmd) => token(cmd).await,
        Command::Task(cmd) => task(cmd).await,
        Command::Approval(cmd) => approval(cmd).await,
        Command::Issuer(cmd) => issuer(cmd).await,
        Command::Secret(cmd) => secret(cmd).await,
        Command::Lease(LeaseCmd::List { task, remote }) => {
            let list = client(&remote)?.list_leases(task.as_deref()).await?;
            print(&remote, &list, || {
                let mut out = format!("{:<34} {:<20} {:<34} {:<34} {:<8} {}", "ID", "SECRET", "ROLE", "TASK", "STATUS", "DROP REASON");
                for l in &list {
                    out.push_str(&format!(
                        "\n{:<34} {:<20} {:<34} {:<34} {:<8} {}",
                        l.id,
                        l.secret,
                        l.role,
                        l.task_id,
                        l.status,
                        l.drop_reason.as_deref().unwrap_or("")
                    ));
                }
                out
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(cmd) => policy(cmd).await,
        Command::Entities(EntitiesCmd::Load { file, remote }) => {
            let json = read_file(&file)?;
            let r = client(&remote)?.load_entities(json).await?;
            print(&remote, &r, || format!("loaded {} entities", r.entities));
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCmd::Rotate { remote }) => {
            let r = client(&remote)?.rotate_key().await?;
            print(&remote, &r, || {
                format!("new signing key {}; {} stays in the JWKS until {} ms", r.kid, r.previous_kid, r.previous_retires_at_ms)
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(cmd) => audit(cmd).await,
        Command::Evaluate { file, remote } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                read_file(&file)?
            };
            let req = serde_json::from_str(&text).with_context(|| format!("`{}` is not an AuthZEN request", file.display()))?;
            let r = client(&remote)?.evaluate(&req).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(if r.decision { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Migrate(args) => {
            let file = match &args.config {
                Some(p) => crate::config::FileConfig::load(p)?,
                None => crate::config::FileConfig::default(),
            };
            let data_dir =
                args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| std::path::PathBuf::from(crate::config::DEFAULT_DATA_DIR));
            let db = crate::config::DatabaseSettings {
                url: args.database_url.clone().filter(|u| !u.is_empty()).or(file.database.url),
                max_connections: 2,
                acquire_timeout_secs: file.database.acquire_timeout_secs.unwrap_or(5),
            };
            println!("{}", crate::storage::migrate(&data_dir, &db).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway(cmd) => match cmd.action {
            None => crate::gateway::run(cmd.run).await,
            Some(action) => gateway(action).await,
        },
    }
}

fn client(remote: &Remote) -> anyhow::Result<Client> {
    Ok(Client::new(&remote.url, remote.token.clone())?)
}

fn print<T: Serialize>(remote: &Remote, value: &T, text: impl FnOnce() -> String) {
    if remote.json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    serde_json::from_str(&read_file(path)?).with_context(|| format!("`{}` is not valid JSON", path.display()))
}

async fn agent(cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCmd::Register { name, owner, purpose, public_key, attrs, remote } => {
            let public_jwk = public_key.as_deref().map(read_json).transpose()?;
            let mut attributes = BTreeMap::new();
            for a in attrs {
                let (k, v) = a.split_once('=').with_context(|| format!("`--attr {a}` must be KEY=VALUE"))?;
                attributes.insert(k.to_owned(), v.to_owned());
            }
            let r = client(&remote)?.register_agent(&RegisterAgentRequest { name, owner, purpose, public_jwk, attributes }).await?;
            print(&remote, &r, || r.spiffe_id.clone());
        }
        AgentCmd::List { remote } => {
            let agents = client(&remote)?.list_agents().await?;
            print(&remote, &agents, || {
                let mut out = format!("{:<24} {:<9} {:<28} {}", "NAME", "STATUS", "OWNER", "PURPOSE");
                for a in &agents {
                    out.push_str(&format!("\n{:<24} {:<9} {:<28} {}", a.name, a.status, a.owner, a.purpose));
                }
                out
            });
        }
        AgentCmd::Show { name, remote } => {
            let a = client(&remote)?.get_agent(&name).await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        AgentCmd::Disable { name, remote } => {
            let r = client(&remote)?.disable_agent(&name).await?;
            print(&remote, &r, || format!("agent {} disabled; {} task(s) revoked", r.agent.name, r.revoked_tasks.len()));
        }
        AgentCmd::Enable { name, remote } => {
            let r = client(&remote)?.enable_agent(&name).await?;
            print(&remote, &r, || format!("agent {} enabled", r.agent.name));
        }
        AgentCmd::Keygen { name, out_dir, alg } => {
            mandate_core::AgentName::parse(&name)?;
            let alg = match alg {
                KeyAlg::Ed25519 => AgentKeyAlg::Ed25519,
                KeyAlg::P256 => AgentKeyAlg::P256,
            };
            let (private, public) = mandate_token::generate_agent_key(alg)?;
            std::fs::create_dir_all(&out_dir)?;
            let priv_path = out_dir.join(format!("{name}.jwk"));
            let pub_path = out_dir.join(format!("{name}.pub.jwk"));
            write_private(&priv_path, &serde_json::to_vec_pretty(&private)?)?;
            std::fs::write(&pub_path, serde_json::to_vec_pretty(&public)?)?;
            println!("{}\n{}", priv_path.display(), pub_path.display());
        }
        AgentCmd::Token { name, key, intent, remote } => {
            let private = read_json(&key)?;
            let intent = read_json(&intent)?;
            let c = client(&remote)?;
            let r = agent_mandate(&c, &name, &private, &intent).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                eprintln!("task {} opened; mandate expires in {} s", r.task_id, r.expires_in);
                println!("{}", r.access_token);
            }
        }
        AgentCmd::Delegate { mandate, to, key, intent, remote } => {
            let mandate = if mandate == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s.trim().to_owned()
            } else {
                mandate
            };
            let private = read_json(&key)?;
            let intent = read_json(&intent)?;
            let c = client(&remote)?;
            let r = delegate(&c, &mandate, &to, &private, &intent).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                eprintln!("task {} delegated to {to}; mandate expires in {} s", r.task_id, r.expires_in);
                println!("{}", r.access_token);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Delegation from the agents' side: the child agent `to` signs a fresh attestation with its
/// key, exchanged with the parent's mandate and the sub-intent for the child's mandate.
pub async fn delegate(
    c: &Client,
    mandate: &str,
    to: &str,
    private_jwk: &Value,
    intent: &Value,
) -> anyhow::Result<mandate_proto::oauth::TokenExchangeResponse> {
    let attestation = sign_attestation(c, to, private_jwk).await?;
    Ok(c.delegate(mandate, &attestation, intent).await?)
}

/// The agent side of the flow: sign a fresh attestation for this server, exchange it with the
/// intent for a task mandate.
pub async fn agent_mandate(
    c: &Client,
    name: &str,
    private_jwk: &Value,
    intent: &Value,
) -> anyhow::Result<mandate_proto::oauth::TokenExchangeResponse> {
    let attestation = sign_attestation(c, name, private_jwk).await?;
    Ok(c.exchange(&attestation, intent).await?)
}

/// A fresh attestation of agent `name` for this server (its issuer and trust domain from the
/// server's metadata), signed with the agent's private key, valid for 60 s.
async fn sign_attestation(c: &Client, name: &str, private_jwk: &Value) -> anyhow::Result<String> {
    let meta = c.oauth_metadata().await?;
    let issuer = meta.get("issuer").and_then(Value::as_str).context("the server's metadata has no `issuer`")?;
    let td = meta.get("mandate_trust_domain").and_then(Value::as_str).context("the server's metadata has no trust domain")?;
    let agent = mandate_core::AgentName::parse(name)?;
    let spiffe = mandate_core::SpiffeId::for_agent(&mandate_core::TrustDomain::parse(td)?, &agent);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let jti = uuid::Uuid::new_v4().to_string();
    Ok(mandate_token::sign_attestation(private_jwk, spiffe.as_str(), issuer, i64::try_from(now)?, 60, &jti)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("cannot write `{}`", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

async fn token(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Create { role, label, remote } => {
            let r = client(&remote)?.create_token(&role, &label).await?;
            print(&remote, &r, || r.token.clone());
        }
        TokenCmd::List { remote } => {
            let tokens = client(&remote)?.list_tokens().await?;
            print(&remote, &tokens, || {
                let mut out = format!("{:<22} {:<9} {:<8} {}", "ID", "ROLE", "STATE", "LABEL");
                for t in &tokens {
                    let state = if t.revoked_at_ms.is_some() { "revoked" } else { "active" };
                    out.push_str(&format!("\n{:<22} {:<9} {:<8} {}", t.id, t.role, state, t.label));
                }
                out
            });
        }
        TokenCmd::Revoke { id, remote } => {
            client(&remote)?.revoke_api_token(&id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn gateway(cmd: GatewayAction) -> anyhow::Result<ExitCode> {
    match cmd {
        GatewayAction::Keygen { out } => {
            let public = crate::gateway::make_key(&out)?;
            println!("{public}");
            eprintln!(
                "wrote the private key to `{}` (mode 0600; it never leaves this gateway); register the public key with `mandate gateway register NAME --public-key {public} --secret SECRET`",
                out.display()
            );
        }
        GatewayAction::Register { name, public_key, secrets, remote } => {
            let req = mandate_proto::gateway::RegisterGatewayRequest { name, public_key, secrets };
            let r = client(&remote)?.register_gateway(&req).await?;
            print(&remote, &r, || r.token.clone());
            if !remote.json {
                eprintln!(
                    "gateway `{}` registered (token {}); start it with this token as `MANDATE_TOKEN`: it is shown only now",
                    r.gateway.name, r.gateway.token_id
                );
            }
        }
        GatewayAction::List { remote } => {
            let list = client(&remote)?.list_gateways().await?;
            print(&remote, &list, || {
                let mut out = format!("{:<24} {:<8} {:<22} {:<44} {}", "NAME", "STATE", "TOKEN", "PUBLIC KEY", "SECRETS");
                for g in &list {
                    let state = if g.revoked_at_ms.is_some() { "revoked" } else { "active" };
                    out.push_str(&format!("\n{:<24} {:<8} {:<22} {:<44} {}", g.name, state, g.token_id, g.public_key, g.secrets.join(",")));
                }
                out
            });
        }
        GatewayAction::Revoke { name, remote } => {
            let g = client(&remote)?.revoke_gateway(&name).await?;
            print(&remote, &g, || format!("gateway {} revoked, and its token {}", g.name, g.token_id));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn approval(cmd: ApprovalCmd) -> anyhow::Result<ExitCode> {
    let one = |a: &mandate_proto::admin::ApprovalView| {
        let by = a.decided_by_label.as_deref().map(|l| format!(" by {l}")).unwrap_or_default();
        format!("{} {}{by}: {} on {}:{} (task {})", a.id, a.status, a.action, a.resource_type, a.resource_id, a.task_id)
    };
    match cmd {
        ApprovalCmd::List { status, limit, remote } => {
            let list = client(&remote)?.list_approvals(Some(&status), limit).await?;
            print(&remote, &list, || {
                let mut out = format!("{:<40} {:<9} {:<16} {:<28} {:<28} {}", "ID", "STATUS", "AGENT", "ACTION", "RESOURCE", "ARGUMENTS");
                for a in &list {
                    let args = mandate_audit::canonical_json(&a.arguments);
                    let args = if args.len() > 60 { format!("{}…", args.chars().take(59).collect::<String>()) } else { args };
                    out.push_str(&format!(
                        "\n{:<40} {:<9} {:<16} {:<28} {:<28} {}",
                        a.id,
                        a.status,
                        a.agent,
                        a.action,
                        format!("{}:{}", a.resource_type, a.resource_id),
                        args
                    ));
                }
                out
            });
        }
        ApprovalCmd::Show { id, remote } => {
            let a = client(&remote)?.get_approval(&id, None).await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        ApprovalCmd::Approve { id, comment, remote } => {
            let a = client(&remote)?.approve(&id, comment).await?;
            print(&remote, &a, || one(&a));
        }
        ApprovalCmd::Deny { id, comment, remote } => {
            let a = client(&remote)?.deny(&id, comment).await?;
            print(&remote, &a, || one(&a));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn task(cmd: TaskCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCmd::List { agent, status, limit, remote } => {
            let tasks = client(&remote)?.list_tasks(agent.as_deref(), status.as_deref(), limit).await?;
            print(&remote, &tasks, || {
                let mut out = format!("{:<44} {:<20} {:<10} {}", "ID", "AGENT", "STATUS", "PURPOSE");
                for t in &tasks {
                    out.push_str(&format!("\n{:<44} {:<20} {:<10} {}", t.id, t.agent, t.status, t.purpose));
                }
                out
            });
        }
        TaskCmd::Show { id, remote } => {
            let t = client(&remote)?.get_task(&id).await?;
            println!("{}", serde_json::to_string_pretty(&t)?);
        }
        TaskCmd::Revoke { id, reason, remote } => {
            let r = client(&remote)?.revoke_task(&id, reason).await?;
            print(&remote, &r, || format!("revoked {} task(s): {}", r.ended.len(), r.ended.join(", ")));
        }
        TaskCmd::Complete { id, reason, remote } => {
            let r = client(&remote)?.complete_task(&id, reason).await?;
            print(&remote, &r, || format!("completed {} task(s): {}", r.ended.len(), r.ended.join(", ")));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn issuer(cmd: IssuerCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        IssuerCmd::Add { issuer, audience, jwks_file, jwks_url, rules, max_token_lifetime, allow_token_reuse, remote } => {
            let jwks = jwks_file.as_deref().map(read_json).transpose()?;
            let rules = rules
                .iter()
                .map(|r| {
                    r.split_once('=')
                        .map(|(c, p)| ClaimRuleView { claim: c.to_owned(), pattern: p.to_owned() })
                        .with_context(|| format!("`--rule {r}` must be CLAIM=PATTERN"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = AddIssuerRequest {
                issuer,
                audience,
                jwks,
                jwks_url,
                rules,
                max_token_lifetime_secs: max_token_lifetime,
                allow_token_reuse,
            };
            let r = client(&remote)?.add_issuer(&request).await?;
            print(&remote, &r, || format!("trusting {} ({} key(s))", r.issuer, r.keys));
        }
        IssuerCmd::List { remote } => {
            let list = client(&remote)?.list_issuers().await?;
            print(&remote, &list, || {
                list.iter()
                    .map(|i| {
                        let lifetime = i.max_token_lifetime_secs.map_or_else(|| "default".to_owned(), |s| format!("{s}s"));
                        let reuse = if i.allow_token_reuse { "  reuse=allowed" } else { "" };
                        format!("{}  aud={}  keys={}  max_lifetime={lifetime}{reuse}", i.issuer, i.audience, i.keys)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        IssuerCmd::Remove { issuer, remote } => {
            client(&remote)?.remove_issuer(&issuer).await?;
            println!("no longer trusting {issuer}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn secret(cmd: SecretCmd) -> anyhow::Result<ExitCode> {
    let line = |s: &SecretView| format!("{}  v{}  {}  {}", s.name, s.version, s.kind, s.description);
    match cmd {
        SecretCmd::Put { name, description, kind, remote } => {
            let value = secret_from_stdin()?;
            let r = client(&remote)?.put_secret_of_kind(&name, &value, &description, Some(&kind)).await?;
            print(&remote, &r, || format!("stored secret {} version {}", r.name, r.version));
        }
        SecretCmd::Rotate { name, remote } => {
            let value = secret_from_stdin()?;
            let r = client(&remote)?.rotate_secret(&name, &value).await?;
            print(&remote, &r, || format!("rotated secret {} to version {}", r.name, r.version));
        }
        SecretCmd::List { remote } => {
            let list = client(&remote)?.list_secrets().await?;
            print(&remote, &list, || list.iter().map(line).collect::<Vec<_>>().join("\n"));
        }
        SecretCmd::Show { name, remote } => {
            let r = client(&remote)?.get_secret(&name).await?;
            print(&remote, &r, || format!("{}\ncreated_at_ms={}  created_by={}", line(&r), r.created_at_ms, r.created_by));
        }
        SecretCmd::Delete { name, remote } => {
            client(&remote)?.delete_secret(&name).await?;
            println!("deleted secret {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A secret value from standard input, without one trailing newline (`\n` or `\r\n`).
fn secret_from_stdin() -> anyhow::Result<Zeroizing<String>> {
    let mut value = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut value).context("cannot read the secret value from standard input")?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("no secret value on standard input");
    }
    Ok(value)
}

async fn policy(cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Validate { dir } => {
            let src = PolicySources::from_dir(&dir)?;
            let diags = mandate_policy::validate(&src);
            if diags.is_empty() {
                println!("ok: {} policy file(s), version {}", src.policies.len(), src.version());
                Ok(ExitCode::SUCCESS)
            } else {
                for d in &diags {
                    eprintln!("{d}");
                }
                eprintln!("{} problem(s)", diags.len());
                Ok(ExitCode::FAILURE)
            }
        }
        PolicyCmd::Test { cases, dir, entities } => {
            let src = match &dir {
                Some(d) => PolicySources::from_dir(d)?,
                None => PolicySources::starter(),
            };
            let snapshot = PolicySnapshot::compile(&src).map_err(|d| {
                anyhow::anyhow!("the policy set is not valid:\n{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
            })?;
            let data = match &entities {
                Some(p) => EntityData::parse(&read_file(p)?, Some(&snapshot))?,
                None => EntityData::empty(),
            };
            let report = mandate_policy::run_cases(&snapshot, &data, &read_file(&cases)?)?;
            println!("{report}");
            Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PolicyCmd::Init { dir } => {
            if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
                bail!("`{}` is not empty; choose an empty or new directory", dir.display());
            }
            PolicySources::starter().write_to(&dir)?;
            for (name, text) in [("README.md", mandate_policy::STARTER_README), ("tests.toml", mandate_policy::STARTER_TESTS)] {
                let path = dir.join(name);
                std::fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
            }
            println!("wrote the starter policy set to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Status { remote } => {
            let s = client(&remote)?.policy_status().await?;
            print(&remote, &s, || {
                format!("version {}\nsource {}\npolicies: {}", s.version, s.source.clone().unwrap_or_default(), s.policies.join(", "))
            });
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Reload { remote } => {
            let r = client(&remote)?.reload_policies().await?;
            if r.reloaded {
                print(&remote, &r, || format!("reloaded: version {}", r.version));
                Ok(ExitCode::SUCCESS)
            } else {
                for d in &r.diagnostics {
                    eprintln!("{d}");
                }
                eprintln!("reload refused; still deciding with version {}", r.version);
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn audit(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { data_dir, remote } => {
            let r = match data_dir {
                Some(dir) => crate::offline::verify_data_dir(&dir).await?,
                None => client(&remote)?.audit_verify().await?,
            };
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.ok {
                println!(
                    "ok: {} events, {} signed checkpoints, head {} {}",
                    r.events,
                    r.checkpoints,
                    r.last_seq.unwrap_or(0),
                    r.last_hash.clone().unwrap_or_default()
                );
            } else {
                println!(
                    "FAILED at seq {}: {} ({})",
                    r.bad_seq.unwrap_or(0),
                    r.message.clone().unwrap_or_default(),
                    r.code.clone().unwrap_or_default()
                );
            }
            Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCmd::Trail { task, remote } => {
            let r = client(&remote)?.audit_trail(&task).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&r.events)?);
            } else {
                for e in &r.events {
                    println!("{}", render_event(e));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Events { kind, agent, task, limit, remote } => {
            let mut q = Vec::new();
            for (k, v) in [("kind", kind), ("agent", agent), ("task", task), ("limit", limit.map(|l| l.to_string()))] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let r = client(&remote)?.audit_events(&q).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&r.events)?);
            } else {
                for e in &r.events {
                    println!("{}", render_event(e));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Export { format, remote } => {
            let f = match format {
                ExportFormat::Jsonl => "jsonl",
                ExportFormat::Ocsf => "ocsf",
            };
            print!("{}", client(&remote)?.audit_export(f).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per event, for people.
pub fn render_event(e: &Value) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let seq = e.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let d = e.get("details").cloned().unwrap_or(Value::Null);
    let ds = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let summary = match s("kind").as_str() {
        "decision" => {
            let policies = d
                .get("policies")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            format!(
                "{} {} on {}:{} -> {}{}",
                if d.get("decision").and_then(Value::as_bool) == Some(true) { "ALLOW" } else { "DENY " },
                ds("action"),
                d.pointer("/resource/type").and_then(Value::as_str).unwrap_or(""),
                d.pointer("/resource/id").and_then(Value::as_str).unwrap_or(""),
                ds("reason"),
                if policies.is_empty() { String::new() } else { format!(" ({policies})") }
            )
        }
        "tool.call" => {
            let forwarded = d.get("forwarded").and_then(Value::as_bool) == Some(true);
            let secret = d
                .get("secret")
                .map(|s| {
                    format!(
                        " [secret {} v{}]",
                        s.get("name").and_then(Value::as_str).unwrap_or(""),
                        s.get("version").and_then(Value::as_u64).unwrap_or(0)
                    )
                })
                .unwrap_or_default();
            format!(
                "{} {}/{} -> {}{}",
                if forwarded { "CALLED " } else { "REFUSED" },
                ds("upstream"),
                ds("tool"),
                if forwarded { ds("result") } else { ds("reason") },
                secret
            )
        }
        "secret.echo_redacted" => {
            let encodings = d
                .get("encodings")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            format!(
                "REDACTED {}/{} echoed secret {} v{} ({} matches: {})",
                ds("upstream"),
                if ds("tool").is_empty() { ds("method") } else { ds("tool") },
                d.pointer("/secret/name").and_then(Value::as_str).unwrap_or(""),
                d.pointer("/secret/version").and_then(Value::as_u64).unwrap_or(0),
                d.get("matches").and_then(Value::as_u64).unwrap_or(0),
                encodings
            )
        }
        "task.opened" => {
            let purpose = d.pointer("/intent/purpose").and_then(Value::as_str).unwrap_or("");
            match d.get("depth").and_then(Value::as_u64).filter(|n| *n > 0) {
                Some(depth) => format!("intent: {purpose} (delegated by {}, depth {depth})", ds("delegated_by")),
                None => format!("intent: {purpose}"),
            }
        }
        "token.issued" => format!("mandate {} (kid {})", ds("jti"), ds("kid")),
        "approval.requested" | "approval.used" | "approval.expired" => format!("{} for {}", ds("approval_id"), ds("action")),
        "approval.approved" | "approval.denied" => {
            let comment = ds("comment");
            format!(
                "{} by {}{}",
                ds("approval_id"),
                ds("approver"),
                if comment.is_empty() { String::new() } else { format!(": {comment}") }
            )
        }
        _ => {
            let r = ds("reason");
            if r.is_empty() { String::new() } else { format!("reason: {r}") }
        }
    };
    format!("#{seq:<6} {:<26} {:<18} {:<20} {}", s("ts"), s("kind"), s("agent"), summary)
}
