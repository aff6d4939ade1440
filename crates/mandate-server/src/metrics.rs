//! Prometheus metrics at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    mandates: Family<OutcomeLabels, Counter>,
    audit_events: Counter,
    audit_batches: Histogram,
    audit_failures: Counter,
    admin_auth_failures: Counter,
    live_tasks: Gauge<i64, std::sync::atomic::AtomicI64>,
    policy_reloads: Family<OutcomeLabels, Counter>,
    revocation_subscribers: Gauge<i64, std::sync::atomic::AtomicI64>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    sync_failures: Counter,
    lease_drop_failures: Counter,
    secret_echoes: Family<UpstreamLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mandate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Decisions made, by outcome and reason", decisions.clone());
        let decision_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        registry.register("decision_duration_seconds", "Time to decide, including the durable audit write", decision_seconds.clone());
        let mandates = Family::<OutcomeLabels, Counter>::default();
        registry.register("mandate_requests", "Token exchange requests, by outcome", mandates.clone());
        let audit_events = Counter::default();
        registry.register("audit_events", "Audit events made durable", audit_events.clone());
        let audit_batches = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("audit_batch_size", "Events per group commit", audit_batches.clone());
        let audit_failures = Counter::default();
        registry.register("audit_append_failures", "Group commits that failed", audit_failures.clone());
        let admin_auth_failures = Counter::default();
        registry.register("admin_auth_failures", "Requests refused for a missing or bad API token", admin_auth_failures.clone());
        let live_tasks = Gauge::default();
        registry.register("live_tasks", "Tasks currently live", live_tasks.clone());
        let policy_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("policy_reloads", "Policy reloads, by outcome", policy_reloads.clone());
        let revocation_subscribers = Gauge::default();
        registry.register("revocation_subscribers", "Connected subscribers of the revocation feed", revocation_subscribers.clone());
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Approval webhook attempts, by outcome (delivered, retried, failed)",
            webhook_deliveries.clone(),
        );
        let sync_failures = Counter::default();
        registry.register(
            "replica_sync_failures",
            "Changes announced by other replicas that could not be applied (repaired by the next resync)",
            sync_failures.clone(),
        );
        let lease_drop_failures = Counter::default();
        registry.register(
            "lease_drop_failures",
            "Attempts to drop a dynamic credential's database role that failed (retried by the next sweep)",
            lease_drop_failures.clone(),
        );
        let secret_echoes = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "secret_echo_redacted",
            "Upstream answers that held the secret injected into their request, redacted by a gateway, by upstream",
            secret_echoes.clone(),
        );
        Metrics {
            secret_echoes,
            lease_drop_failures,
            sync_failures,
            registry,
            decisions,
            decision_seconds,
            mandates,
            audit_events,
            audit_batches,
            audit_failures,
            admin_auth_failures,
            live_tasks,
            policy_reloads,
            revocation_subscribers,
            webhook_deliveries,
        }
    }

    pub fn decision(&self, allowed: bool, reason: &str, seconds: f64) {
        let decision = if allowed { "allow" } else { "deny" };
        self.decisions.get_or_create(&DecisionLabels { decision, reason: reason.to_owned() }).inc();
        self.decision_seconds.observe(seconds);
    }

    pub fn mandate(&self, outcome: &'static str) {
        self.mandates.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn audit_batch(&self, n: usize) {
        self.audit_events.inc_by(n as u64);
        self.audit_batches.observe(n as f64);
    }

    pub fn audit_failure(&self) {
        self.audit_failures.inc();
    }

    /// A gateway redacted an injected secret from an upstream's answer.
    pub fn secret_echo_redacted(&self, upstream: &str) {
        self.secret_echoes.get_or_create(&UpstreamLabels { upstream: mandate_core::clip(upstream) }).inc();
    }

    pub fn lease_drop_failure(&self) {
        self.lease_drop_failures.inc();
    }

    pub fn sync_failure(&self) {
        self.sync_failures.inc();
    }

    pub fn admin_auth_failure(&self) {
        self.admin_auth_failures.inc();
    }

    pub fn set_live_tasks(&self, n: usize) {
        self.live_tasks.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads.get_or_create(&OutcomeLabels { outcome: if ok { "ok" } else { "refused" } }).inc();
    }

    /// A revocation subscriber connected (`true`) or went away.
    pub fn revocation_subscriber(&self, connected: bool) {
        if connected {
            self.revocation_subscribers.inc();
        } else {
            self.revocation_subscribers.dec();
        }
    }

    /// One webhook attempt: `delivered`, `retried` (failed, will retry) or `failed` (gave up).
    pub fn webhook(&self, outcome: &'static str) {
        self.webhook_deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
