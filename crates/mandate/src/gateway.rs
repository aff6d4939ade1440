//! `mandate gateway`: the enforcement gateway as its own process, in front of MCP servers
//! and HTTP APIs, asking a control plane elsewhere (`MANDATE_URL`, with a `pep` token).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::routing::get;
use mandate_gateway::remote::{Remote, RemoteOptions};
use mandate_gateway::{Gateway, GatewayFile};
use mandate_secrets::MasterKey;
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

fn master_key(file: Option<&Path>) -> anyhow::Result<Option<MasterKey>> {
    if let Some(text) = std::env::var_os("MANDATE_MASTER_KEY").map(|v| zeroize::Zeroizing::new(v.to_string_lossy().into_owned())) {
        return Ok(Some(MasterKey::from_base64(&text).map_err(|e| anyhow::anyhow!("`MANDATE_MASTER_KEY` is not valid: {e}"))?));
    }
    match file {
        None => Ok(None),
        Some(p) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(p).with_context(|| format!("cannot read master key file `{}`", p.display()))?,
            );
            Ok(Some(
                MasterKey::from_base64(text.trim()).map_err(|e| anyhow::anyhow!("master key file `{}` is not valid: {e}", p.display()))?,
            ))
        }
    }
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let file = load(&args.config)?;
    let cfg = file.check().map_err(|e| anyhow::anyhow!("config file `{}`: {e}", args.config.display()))?;
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
    let remote =
        Remote::start(RemoteOptions { url, pep_token: token, master_key: master_key(args.master_key_file.as_deref())?, leeway_secs: 60 })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
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
