//! `mandate serve`: open the store, keys and policies, bind, serve until a signal, then stop
//! without losing an audit event.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use mandate_audit::kinds;
use mandate_core::{Clock, SystemClock, TrustDomain};
use mandate_policy::PolicySources;
use mandate_server::{AppState, Background, Settings};
use mandate_store::Store;
use notify::Watcher;
use tokio::sync::watch;

use crate::config::ServeConfig;

/// A started server: where it listens and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub url: String,
    pub state: Arc<AppState>,
    /// Printed once when the store was new and no `MANDATE_ADMIN_TOKEN` was given.
    pub bootstrap_token: Option<String>,
    /// The embedded gateway, when the config has a `[gateway]` section.
    pub gateway: Option<Arc<mandate_gateway::Gateway>>,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, drains the audit trail.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        drop(self.state);
        self.join.await.context("the server task failed")?
    }

    /// Waits until the server stops by itself (a signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        let Running { join, stop, state, .. } = self;
        drop(state);
        let r = join.await.context("the server task failed")?;
        drop(stop);
        r
    }
}

/// Opens everything and starts serving in the background.
pub async fn start(cfg: ServeConfig, admin_secret: Option<String>, handle_signals: bool) -> anyhow::Result<Running> {
    cfg.validate()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trust_domain = TrustDomain::parse(&cfg.trust_domain).map_err(|e| anyhow::anyhow!("`trust_domain`: {e}"))?;
    // Loaded before anything is opened: a server that cannot serve TLS never says it listens.
    let tls = match &cfg.tls {
        Some(tls) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| format!("cannot load TLS certificate `{}` and key `{}`", tls.cert.display(), tls.key.display()))?,
        ),
        None => None,
    };
    create_private_dir(&cfg.data_dir)?;
    let std_listener = std::net::TcpListener::bind(cfg.listen).with_context(|| format!("cannot listen on `{}`", cfg.listen))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let issuer = cfg.issuer_url.clone().unwrap_or_else(|| url.clone()).trim_end_matches('/').to_owned();

    let policy_dir = match &cfg.policy_dir {
        Some(d) => d.clone(),
        None => {
            let d = cfg.data_dir.join("policies");
            if !d.exists() {
                PolicySources::starter().write_to(&d).with_context(|| format!("cannot write the starter policies to `{}`", d.display()))?;
            }
            d
        }
    };
    let store: Arc<dyn Store> = crate::storage::open(&cfg.data_dir, &cfg.database).await?;
    // Behind a proxy that ends TLS, the issuer URL says that browsers use HTTPS.
    let console_secure_cookie = cfg.tls.is_some() || issuer.starts_with("https://");
    let mut settings = Settings::new(issuer, trust_domain, cfg.data_dir.join("keys"));
    settings.console_secure_cookie = console_secure_cookie;
    settings.audience = cfg.audience.clone();
    settings.environment = cfg.environment.clone();
    settings.default_task_ttl = Duration::from_secs(cfg.default_ttl_secs);
    settings.max_task_ttl = Duration::from_secs(cfg.max_ttl_secs);
    settings.max_delegation_depth = cfg.max_delegation_depth;
    settings.max_attestation_lifetime = Duration::from_secs(cfg.attestation_max_lifetime_secs);
    settings.leeway = Duration::from_secs(cfg.leeway_secs);
    settings.checkpoint_every = cfg.checkpoint_every;
    settings.checkpoint_interval = Duration::from_secs(cfg.checkpoint_interval_secs.max(1));
    settings.max_body_bytes = cfg.max_body_bytes;
    settings.policy_dir = Some(policy_dir.clone());
    settings.shadow_policy_dir = cfg.shadow_policy_dir.clone();
    // The roles of `postgres-dynamic` secrets are created and dropped by SQL, in its own crate.
    settings.dynamic_credentials = Some(Arc::new(mandate_dyncreds_postgres::PgCredentials::new()));
    if let Some(text) = std::env::var_os("MANDATE_MASTER_KEY").map(|v| zeroize::Zeroizing::new(v.to_string_lossy().into_owned())) {
        let key = mandate_secrets::MasterKey::from_base64(&text).map_err(|e| anyhow::anyhow!("`MANDATE_MASTER_KEY` is not valid: {e}"))?;
        settings.master_key = Some(key);
    }
    if let Some(t) = cfg.approvals.ttl_secs {
        settings.approval_ttl = Duration::from_secs(t);
    }
    settings.approval_forbid_owner = cfg.approvals.forbid_owner.unwrap_or(false);
    if let Some(url) = &cfg.approvals.webhook_url {
        let secret = match std::env::var("MANDATE_APPROVAL_WEBHOOK_SECRET").ok().filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => match &cfg.approvals.webhook_secret_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read `approvals.webhook_secret_file` `{}`: {e}", p.display()))?
                    .trim()
                    .to_owned(),
                None => bail!(
                    "`approvals.webhook_url` needs a signing key: set `MANDATE_APPROVAL_WEBHOOK_SECRET` or `approvals.webhook_secret_file`"
                ),
            },
        };
        if secret.len() < 16 {
            bail!("the approval webhook's signing key must be at least 16 bytes");
        }
        let mut hook = mandate_server::webhook::WebhookSettings::new(url.clone(), secret);
        if let Some(n) = cfg.approvals.webhook_attempts {
            hook.max_attempts = n;
        }
        settings.approval_webhook = Some(hook);
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (state, background) = AppState::start(settings, store.clone(), clock).await?;

    // First start: make the bootstrap admin token.
    let mut bootstrap_token = None;
    if store.list_api_tokens().await?.is_empty() {
        match admin_secret.filter(|s| !s.is_empty()) {
            Some(secret) => {
                if secret.len() < 16 {
                    bail!("`MANDATE_ADMIN_TOKEN` must be at least 16 characters");
                }
                state.install_admin_secret(&secret).await?;
            }
            None => {
                let (_, secret) = state.create_api_token(mandate_core::Role::Admin, "bootstrap").await?;
                bootstrap_token = Some(secret);
            }
        }
    }
    let ev = state.event(
        kinds::SERVER_STARTED,
        "system",
        None,
        None,
        serde_json::json!({ "issuer": state.settings.issuer, "policy_version": state.policy.current().version(), "listen": addr.to_string() }),
    );
    state.record(ev).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let watcher = watch_policies(Arc::downgrade(&state), &policy_dir, cfg.shadow_policy_dir.as_deref());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut app = mandate_server::app(state.clone());
    let gateway = match cfg.gateway.clone() {
        Some(gcfg) => {
            let control: Arc<dyn mandate_gateway::ControlPlane> = mandate_embedded::Embedded::new(state.clone());
            let gw = mandate_gateway::Gateway::new(gcfg, control).map_err(|e| anyhow::anyhow!("{e}"))?;
            app = mandate_gateway::router(gw.clone()).merge(app);
            Some(gw)
        }
        None => None,
    };
    let st = state.clone();
    let join = tokio::spawn(async move {
        let _watcher = watcher;
        // Open revocation streams (gateways following the feed) would hold the graceful
        // shutdown up forever: the feed closes as soon as the signal comes.
        let feed = st.revocations().clone();
        let shutdown = async move {
            shutdown_signal(stop_rx, handle_signals).await;
            feed.close();
        };
        match tls {
            None => {
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                axum::serve(listener, app.into_make_service()).with_graceful_shutdown(shutdown).await?;
            }
            Some(rustls) => {
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    h.graceful_shutdown(Some(Duration::from_secs(10)));
                });
                axum_server::from_tcp_rustls(std_listener, rustls).handle(handle).serve(app.into_make_service()).await?;
            }
        }
        finish(background, st).await;
        Ok(())
    });
    Ok(Running { addr, url, state, bootstrap_token, gateway, stop: stop_tx, join })
}

async fn finish(background: Background, state: Arc<AppState>) {
    background.shutdown(state).await;
    tracing::info!("stopped; every acknowledged audit event is durable");
}

async fn shutdown_signal(mut stop: watch::Receiver<bool>, handle_signals: bool) {
    let ctrl_c = async {
        if handle_signals {
            let _ = tokio::signal::ctrl_c().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        if handle_signals {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let stopped = async {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = stopped => {}
    }
    tracing::info!("shutting down");
}

/// Reloads policies when a file in a policy directory changes (debounced). Returns the
/// watcher, which must be kept alive.
fn watch_policies(state: Weak<AppState>, dir: &Path, shadow: Option<&Path>) -> Option<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the policy directory; reload with `mandate policy reload`");
            return None;
        }
    };
    for d in std::iter::once(dir).chain(shadow) {
        if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %d.display(), "cannot watch a policy directory");
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Editors write in several steps: wait for the burst to end.
            tokio::time::sleep(Duration::from_millis(250)).await;
            while rx.try_recv().is_ok() {}
            let Some(state) = state.upgrade() else { return };
            let r = mandate_server::reload_policies(&state, "system:watcher").await;
            if !r.reloaded {
                tracing::warn!(diagnostics = ?r.diagnostics, "policy change refused; the previous set keeps deciding");
            }
        }
    });
    Some(watcher)
}

fn create_private_dir(dir: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory `{}`", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data directory `{}`", dir.display()))?;
    }
    Ok(())
}
