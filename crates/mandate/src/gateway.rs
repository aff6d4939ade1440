//! `mandate gateway`: the enforcement gateway as its own process, in front of MCP servers
//! and HTTP APIs, asking a control plane elsewhere (`MANDATE_URL`, with a `pep` token).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::routing::get;
use mandate_gateway::remote::{Registration, Remote, RemoteOptions};
use mandate_gateway::{Gateway, GatewayFile};
use mandate_secrets::GatewayPrivateKey;
use serde::Deserialize;

use crate::cli::GatewayArgs;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8481";

/// Reads a gateway config: the tables at the top level, or under `[gateway]` of a
/// `mandate serve` config.
pub fn load(path: &Path) -> anyhow::Result<GatewayFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file `{}`", path.display()))?;
    let value: toml::Table = toml::from_str(&text).with_context(|| format!("config file `{}` is not valid TOML", path.display()))?;
    let inner = match value.get("gateway") {
        Some(toml::Value::Table(t)) => toml::Value::Table(t.clone()),
        Some(_) => bail!("config file `{}`: `gateway` must be a table", path.display()),
        None => toml::Value::Table(value),
    };
    GatewayFile::deserialize(inner).with_context(|| format!("config file `{}` is not a valid gateway config", path.display()))
}

/// How to move a gateway that was given the master key; the message of the refusal.
const MIGRATE: &str = "a remote gateway no longer takes the control plane's master key: remove `MANDATE_MASTER_KEY` and `--master-key-file` from this gateway, make its own key (`mandate gateway keygen`, or let the gateway make one on first start), register it with `mandate gateway register NAME --public-key KEY --secret SECRET` and start the gateway with the `pep` token that prints";

/// Refuses a master key given to the gateway: one compromised gateway must not open every
/// secret.
fn refuse_master_key(file: Option<&Path>) -> anyhow::Result<()> {
    if std::env::var_os("MANDATE_MASTER_KEY").is_some() || file.is_some() {
        bail!("{MIGRATE}");
    }
    Ok(())
}

/// Writes a new private key to `path` (mode 0600, never over an existing file); answers the
/// public key, base64url.
pub fn make_key(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    let key = GatewayPrivateKey::generate();
    let public = key.public_key().map_err(|e| anyhow::anyhow!("{e}"))?.to_base64();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f =
        opts.open(path).with_context(|| format!("cannot create key file `{}` (an existing key is never overwritten)", path.display()))?;
    let text = key.to_base64();
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(public)
}

/// The gateway's private key from `path`; made there first if the file does not exist (then
/// the public key and how to register it are printed).
fn load_key(path: &Path) -> anyhow::Result<GatewayPrivateKey> {
    if !path.exists() {
        let public = make_key(path)?;
        let mut out = std::io::stdout().lock();
        use std::io::Write;
        writeln!(out, "mandate gateway: made a new key pair; the private key is in `{}` and never leaves this gateway", path.display())?;
        writeln!(out, "mandate gateway: public key {public}")?;
        writeln!(
            out,
            "mandate gateway: register it with `mandate gateway register NAME --public-key {public} --secret SECRET` and start the gateway with the `pep` token that prints"
        )?;
        out.flush()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the gateway's key file may be read by others; make it mode 0600");
        }
    }
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("cannot read key file `{}`", path.display()))?);
    GatewayPrivateKey::from_base64(&text).map_err(|e| anyhow::anyhow!("key file `{}` is not valid: {e}", path.display()))
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    refuse_master_key(args.master_key_file.as_deref())?;
    let config = args.config.clone().context("no gateway config: pass `--config FILE` (or set `MANDATE_GATEWAY_CONFIG`)")?;
    let file = load(&config)?;
    let cfg = file.check().map_err(|e| anyhow::anyhow!("config file `{}`: {e}", config.display()))?;
    let listen_s = args.listen.clone().or_else(|| file.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_s.parse().map_err(|_| anyhow::anyhow!("`{listen_s}` is not a listen address like `127.0.0.1:8481`"))?;
    if !listen.ip().is_loopback() && !args.allow_insecure_http {
        bail!("refusing to serve plain HTTP on non-loopback address `{listen}`: put TLS in front or pass `--allow-insecure-http`");
    }
    let url = args
        .url
        .clone()
        .or_else(|| file.control_plane_url.clone())
        .context("no control plane: set `MANDATE_URL`, `--url` or `control_plane_url`")?;
    if url::Url::parse(&url).is_err() {
        bail!("`{url}` is not a URL");
    }
    let token =
        args.token.clone().filter(|t| !t.is_empty()).context("no API token: set `MANDATE_TOKEN` (or `--token`) to a `pep` token")?;
    let key_file = args.key_file.clone().unwrap_or_else(|| config.parent().unwrap_or_else(|| Path::new(".")).join("gateway.key"));
    let key = load_key(&key_file)?;
    let remote = Remote::start(RemoteOptions { url, pep_token: token, key, leeway_secs: 60 }).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    match remote.registration().await.map_err(|e| anyhow::anyhow!("{e}"))? {
        Registration::Registered(g) => {
            tracing::info!(gateway = %g.name, secrets = %g.secrets.join(","), "registered at the control plane");
        }
        Registration::Refused(code) if code == "gateway_not_registered" => {
            tracing::warn!(
                "this gateway's token is bound to no registered gateway: upstreams that need a secret are refused (`gateway_not_registered`) until it is registered with `mandate gateway register`"
            );
        }
        Registration::Refused(code) => tracing::warn!(code = %code, "the control plane refused this gateway's registration"),
        Registration::Unknown(why) => tracing::warn!(error = %why, "cannot ask the control plane for this gateway's registration yet"),
    }
    let control: Arc<dyn mandate_gateway::ControlPlane> = remote.clone();
    let flusher = remote.clone();
    let gw = Gateway::new(cfg, control).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = mandate_gateway::router(gw).route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let r = remote.clone();
            async move {
                if r.stream_connected.load(std::sync::atomic::Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ready")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "the control plane is not reachable")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on `{listen}`"))?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "mandate gateway: listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "gateway listening");
    axum::serve(listener, app.into_make_service()).with_graceful_shutdown(signal()).await?;
    // Deliver the evidence still held (calls refused while the control plane was away, the
    // last calls' outcomes) before going; what cannot be delivered in time is logged.
    if flusher.flush(std::time::Duration::from_secs(10)).await > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
