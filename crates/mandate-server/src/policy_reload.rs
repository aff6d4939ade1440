//! Hot reload: a new policy set is compiled and validated apart, then swapped in whole. If it
//! is not valid, the old set keeps deciding and the refusal is audited.

use mandate_audit::kinds;
use mandate_policy::{PolicySnapshot, PolicySources};
use mandate_proto::admin::ReloadResponse;
use serde_json::json;

use crate::state::AppState;

pub async fn reload(state: &AppState, actor: &str) -> ReloadResponse {
    let previous = state.policy.current().version().to_owned();
    let previous_shadow = state.policy.shadow().map(|s| s.version().to_owned());
    let Some(dir) = state.settings.policy_dir.clone() else {
        return ReloadResponse {
            reloaded: false,
            version: previous,
            diagnostics: vec!["the server runs the built-in starter set; start it with `--policy-dir` to reload policies".into()],
        };
    };
    let compiled = PolicySources::from_dir(&dir)
        .map_err(|e| vec![e.to_string()])
        .and_then(|src| PolicySnapshot::compile(&src).map_err(|d| d.iter().map(ToString::to_string).collect()));
    let shadow = match &state.settings.shadow_policy_dir {
        None => Ok(None),
        Some(sdir) => PolicySources::from_dir(sdir)
            .map_err(|e| vec![format!("shadow: {e}")])
            .and_then(|src| PolicySnapshot::compile(&src).map(Some).map_err(|d| d.iter().map(|x| format!("shadow: {x}")).collect())),
    };
    match (compiled, shadow) {
        (Ok(snapshot), Ok(shadow)) => {
            let version = snapshot.version().to_owned();
            let shadow_version = shadow.as_ref().map(|s| s.version().to_owned());
            // A change to the shadow set alone is a reload too: decisions record its verdicts.
            let changed = version != previous || (state.settings.shadow_policy_dir.is_some() && shadow_version != previous_shadow);
            state.policy.swap(snapshot);
            if state.settings.shadow_policy_dir.is_some() {
                state.policy.swap_shadow(shadow);
            }
            state.metrics.policy_reload(true);
            if changed {
                let ev = state.event(
                    kinds::POLICY_RELOADED,
                    actor,
                    None,
                    None,
                    json!({ "version": version, "previous_version": previous, "source": dir.display().to_string(), "shadow_version": shadow_version }),
                );
                if let Err(e) = state.record(ev).await {
                    tracing::error!(error = %e, "could not audit a policy reload");
                }
                tracing::info!(%version, "policy set reloaded");
            }
            ReloadResponse { reloaded: true, version, diagnostics: Vec::new() }
        }
        (a, b) => {
            let mut diagnostics = Vec::new();
            if let Err(d) = a {
                diagnostics.extend(d);
            }
            if let Err(d) = b {
                diagnostics.extend(d);
            }
            state.metrics.policy_reload(false);
            tracing::warn!(diagnostics = ?diagnostics, "policy reload refused; keeping the current set");
            let ev = state.event(
                kinds::POLICY_RELOAD_FAILED,
                actor,
                None,
                None,
                json!({ "kept_version": previous, "diagnostics": diagnostics }),
            );
            if let Err(e) = state.record(ev).await {
                tracing::error!(error = %e, "could not audit a refused policy reload");
            }
            ReloadResponse { reloaded: false, version: previous, diagnostics }
        }
    }
}
