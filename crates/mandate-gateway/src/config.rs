//! The gateway's configuration: upstreams, their tools and routes, and what secret goes where.
//!
//! The same tables are read from a standalone `mandate gateway --config FILE` and from the
//! `[gateway]` section of `mandate serve`'s config. Every table refuses unknown keys. A file
//! is parsed into [`GatewayFile`] (plain serde) and then checked into [`GatewayConfig`]
//! (parse, don't validate): names, kinds, classifications, templates and secret formats are
//! all known good once a `GatewayConfig` exists.

use std::collections::BTreeMap;
use std::time::Duration;

use mandate_core::Classification;
use mandate_policy::ActionKind;
use serde::Deserialize;

/// Upstream names: what `/mcp/NAME` and action names (`NAME.TOOL`) are built from.
const MAX_NAME: usize = 64;

/// Default per-call upstream timeout.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest JSON-RPC message or HTTP body the gateway accepts from a client or upstream.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The gateway tables as written in TOML.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Where a standalone gateway listens (`--listen` wins).
    pub listen: Option<String>,
    /// The control plane a standalone gateway asks (`MANDATE_URL`, `--url` win).
    pub control_plane_url: Option<String>,
    /// The `environment` sent with every decision (default: the control plane's).
    pub environment: Option<String>,
    /// The largest client or upstream message, in bytes.
    pub max_message_bytes: Option<usize>,
    /// `Origin` values browsers may send (MCP requires Origin validation). Requests without
    /// an `Origin` header (non-browser clients) are always accepted; loopback origins too.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Idle MCP sessions are closed after this many seconds.
    pub session_idle_secs: Option<u64>,
    /// How long a call held for approval waits for a person before it is answered
    /// `approval_required` with the approval id (0: answer at once). Default 5, at most 30.
    pub approval_wait_secs: Option<u64>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Option<String>,
    pub command: Option<Vec<String>>,
    /// Environment for a stdio upstream's process (nothing else is inherited but `PATH`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `auto` (default), `2025-11-25` or `2026-07-28`: the revision spoken to this upstream.
    pub protocol: Option<String>,
    pub timeout_secs: Option<u64>,
    pub inject: Option<InjectFile>,
    #[serde(default)]
    pub tools: BTreeMap<String, ToolFile>,
    #[serde(default, rename = "routes")]
    pub routes: Vec<RouteFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectFile {
    pub header: Option<String>,
    pub secret: String,
    /// `Bearer {}` by default; `{}` is replaced by the secret's value.
    pub format: Option<String>,
    /// HTTP Basic: the user name; the secret is the password (`format` must not be set).
    pub basic_user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFile {
    pub kind: Option<String>,
    pub classification: Option<String>,
    /// Whether policy may hold this tool for human approval (default true). When false, a
    /// decision that asks for approval is a plain deny.
    pub approval: Option<bool>,
    /// Record the call's full arguments in the trail (default: a digest only).
    pub log_arguments: Option<bool>,
    /// Argument fields replaced by `"[redacted]"` when arguments are recorded.
    #[serde(default)]
    pub redact: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub method: String,
    pub path: String,
    pub action: String,
    pub kind: String,
    pub classification: String,
    /// `type:id` with `{param}` placeholders from the path, e.g. `invoice:{id}`.
    pub resource: Option<String>,
    pub approval: Option<bool>,
    /// Accept `%2F` and `%5C` inside a path parameter: the parameter is decided decoded and
    /// forwarded in the one encoding the gateway writes (default false: refused).
    pub decode_slashes: Option<bool>,
    /// Query keys that may repeat: policy sees them as lists (default: a repeated key is
    /// refused).
    #[serde(default)]
    pub list_params: Vec<String>,
    /// Request headers that matter to this route: they go into the decision context and the
    /// request's canonical view.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub environment: Option<String>,
    pub max_message_bytes: usize,
    pub allowed_origins: Vec<String>,
    pub session_idle: Duration,
    pub approval_wait: Duration,
    pub upstreams: Vec<Upstream>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub target: Target,
    pub timeout: Duration,
    pub inject: Option<Inject>,
    pub tools: BTreeMap<String, ToolPolicy>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// MCP over streamable HTTP.
    McpHttp { url: String, protocol: ProtocolChoice },
    /// MCP over stdio: the gateway spawns the command.
    McpStdio { command: Vec<String>, env: BTreeMap<String, String> },
    /// A plain HTTP API behind a route table.
    Http { base_url: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolChoice {
    Auto,
    Legacy,
    Stateless,
}

/// How a secret goes upstream.
#[derive(Debug, Clone)]
pub struct Inject {
    pub header: String,
    pub secret: String,
    pub format: InjectFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectFormat {
    /// `prefix{}suffix`.
    Template { prefix: String, suffix: String },
    /// `Basic base64(user:secret)`.
    Basic { user: String },
}

/// What the gateway knows of one tool. Tools the config does not name get [`ToolPolicy::unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPolicy {
    pub kind: ActionKind,
    pub classification: Classification,
    pub approval: bool,
    pub log_arguments: bool,
    pub redact: Vec<String>,
}

impl ToolPolicy {
    /// A tool the configuration does not know: the most powerful kind at the highest
    /// classification, so only a policy that means it lets it through.
    pub fn unknown() -> Self {
        ToolPolicy {
            kind: ActionKind::Execute,
            classification: Classification::Restricted,
            approval: true,
            log_arguments: false,
            redact: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub segments: Vec<Segment>,
    pub action: String,
    pub kind: ActionKind,
    pub classification: Classification,
    pub resource: Option<(String, Vec<Segment>)>,
    pub approval: bool,
    /// Whether `%2F` and `%5C` may appear in a path parameter.
    pub decode_slashes: bool,
    /// Query keys that may repeat (decoded).
    pub list_params: Vec<String>,
    /// Request headers decided on (lowercase names).
    pub headers: Vec<String>,
}

/// A piece of a path pattern or template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// `{*rest}`: the rest of the path (last segment only).
    Rest(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl GatewayFile {
    /// Parses TOML text holding the gateway tables at the top level.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Checks everything; the first problem is the error, naming the upstream and key.
    pub fn check(&self) -> Result<GatewayConfig, ConfigError> {
        let mut upstreams: Vec<Upstream> = Vec::new();
        for u in &self.upstreams {
            let up = check_upstream(u)?;
            if upstreams.iter().any(|o| o.name == up.name) {
                return err(format!("upstream `{}` is configured twice", up.name));
            }
            upstreams.push(up);
        }
        let max = self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if !(1024..=64 * 1024 * 1024).contains(&max) {
            return err("`max_message_bytes` must be between 1024 and 67108864");
        }
        for o in &self.allowed_origins {
            if url::Url::parse(o).is_err() {
                return err(format!("`allowed_origins` entry `{}` is not an origin URL", mandate_core::clip(o)));
            }
        }
        let approval_wait = self.approval_wait_secs.unwrap_or(DEFAULT_APPROVAL_WAIT_SECS);
        if approval_wait > MAX_APPROVAL_WAIT_SECS {
            return err(format!("`approval_wait_secs` must be at most {MAX_APPROVAL_WAIT_SECS}"));
        }
        Ok(GatewayConfig {
            approval_wait: Duration::from_secs(approval_wait),
            environment: self.environment.clone(),
            max_message_bytes: max,
            allowed_origins: self.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect(),
            session_idle: Duration::from_secs(self.session_idle_secs.unwrap_or(600).clamp(10, 86_400)),
            upstreams,
        })
    }
}

/// How long a held call waits for a person by default.
pub const DEFAULT_APPROVAL_WAIT_SECS: u64 = 5;
/// The longest a held call may wait (the control plane's longest long poll).
pub const MAX_APPROVAL_WAIT_SECS: u64 = 30;

/// Upstream names: 1–64 of `a-z0-9-_`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn check_upstream(u: &UpstreamFile) -> Result<Upstream, ConfigError> {
    if !valid_name(&u.name) {
        return err(format!("upstream name `{}` must be 1-64 of `a-z0-9-_`", mandate_core::clip(&u.name)));
    }
    let name = u.name.clone();
    let protocol = match u.protocol.as_deref() {
        None | Some("auto") => ProtocolChoice::Auto,
        Some("2025-11-25") => ProtocolChoice::Legacy,
        Some("2026-07-28") => ProtocolChoice::Stateless,
        Some(other) => {
            return err(format!(
                "upstream `{name}`: `protocol` `{}` is not one of `auto`, `2025-11-25`, `2026-07-28`",
                mandate_core::clip(other)
            ));
        }
    };
    let target = match (u.kind.as_str(), &u.url, &u.command) {
        ("mcp", Some(url), None) => McpHttpUrl::check(&name, url).map(|url| Target::McpHttp { url, protocol })?,
        ("mcp", None, Some(command)) => {
            if command.is_empty() || command.iter().any(String::is_empty) {
                return err(format!("upstream `{name}`: `command` must be a non-empty array of non-empty strings"));
            }
            Target::McpStdio { command: command.clone(), env: u.env.clone() }
        }
        ("mcp", Some(_), Some(_)) => return err(format!("upstream `{name}`: set either `url` or `command`, not both")),
        ("mcp", None, None) => return err(format!("upstream `{name}`: an MCP upstream needs `url` or `command`")),
        ("http", Some(url), None) => Target::Http { base_url: McpHttpUrl::check(&name, url)?.trim_end_matches('/').to_owned() },
        ("http", _, _) => return err(format!("upstream `{name}`: an HTTP upstream needs `url` (and no `command`)")),
        (other, _, _) => {
            return err(format!("upstream `{name}`: `type` `{}` is not one of `mcp`, `http`", mandate_core::clip(other)));
        }
    };
    if !u.env.is_empty() && !matches!(target, Target::McpStdio { .. }) {
        return err(format!("upstream `{name}`: `env` applies to stdio upstreams (`command`) only"));
    }
    if u.inject.is_some() && matches!(target, Target::McpStdio { .. }) {
        return err(format!(
            "upstream `{name}`: `inject` puts a secret in an HTTP header, which a stdio upstream (`command`) does not have"
        ));
    }
    let inject = u.inject.as_ref().map(|i| check_inject(&name, i)).transpose()?;
    let mut tools = BTreeMap::new();
    for (tool, t) in &u.tools {
        if tool.is_empty() || tool.len() > 128 {
            return err(format!("upstream `{name}`: tool names must be 1-128 characters"));
        }
        if is_reserved_tool_name(tool) && !READ_ENTRIES.contains(&tool.as_str()) {
            return err(format!(
                "upstream `{name}`: tool `{tool}` is a name the gateway keeps for the `{}` method: such a tool is never listed nor called",
                tool.replace('.', "/")
            ));
        }
        tools.insert(tool.clone(), check_tool(&name, tool, t)?);
    }
    let is_http = matches!(target, Target::Http { .. });
    if is_http && !tools.is_empty() {
        return err(format!("upstream `{name}`: an HTTP upstream has `routes`, not `tools`"));
    }
    if !is_http && !u.routes.is_empty() {
        return err(format!("upstream `{name}`: an MCP upstream has `tools`, not `routes`"));
    }
    let routes = u.routes.iter().map(|r| check_route(&name, r)).collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_secs(u.timeout_secs.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT.as_secs()));
    if timeout.is_zero() || timeout > Duration::from_secs(3600) {
        return err(format!("upstream `{name}`: `timeout_secs` must be between 1 and 3600"));
    }
    Ok(Upstream { name, target, timeout, inject, tools, routes })
}

struct McpHttpUrl;

impl McpHttpUrl {
    fn check(name: &str, url: &str) -> Result<String, ConfigError> {
        match url::Url::parse(url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(url.to_owned()),
            _ => err(format!("upstream `{name}`: `url` `{}` is not an http(s) URL", mandate_core::clip(url))),
        }
    }
}

fn check_inject(name: &str, i: &InjectFile) -> Result<Inject, ConfigError> {
    let header = i.header.clone().unwrap_or_else(|| "Authorization".to_owned());
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return err(format!("upstream `{name}`: `inject.header` `{}` is not a header name", mandate_core::clip(&header)));
    }
    if mandate_secrets::validate_name(&i.secret).is_err() {
        return err(format!("upstream `{name}`: `inject.secret` `{}` is not a secret name", mandate_core::clip(&i.secret)));
    }
    let format = match (&i.basic_user, &i.format) {
        (Some(_), Some(_)) => return err(format!("upstream `{name}`: set `inject.format` or `inject.basic_user`, not both")),
        (Some(user), None) => {
            if user.contains(':') {
                return err(format!("upstream `{name}`: `inject.basic_user` must not contain `:`"));
            }
            InjectFormat::Basic { user: user.clone() }
        }
        (None, f) => {
            let f = f.as_deref().unwrap_or("Bearer {}");
            let Some((prefix, suffix)) = f.split_once("{}") else {
                return err(format!("upstream `{name}`: `inject.format` must contain `{{}}` where the secret goes"));
            };
            if suffix.contains("{}") {
                return err(format!("upstream `{name}`: `inject.format` must contain `{{}}` exactly once"));
            }
            InjectFormat::Template { prefix: prefix.to_owned(), suffix: suffix.to_owned() }
        }
    };
    Ok(Inject { header, secret: i.secret.clone(), format })
}

fn parse_kind(name: &str, what: &str, s: &str) -> Result<ActionKind, ConfigError> {
    s.parse::<ActionKind>().map_err(|_| {
        ConfigError(format!("upstream `{name}`: {what} `kind` `{}` is not one of `read`, `write`, `execute`", mandate_core::clip(s)))
    })
}

fn parse_classification(name: &str, what: &str, s: &str) -> Result<Classification, ConfigError> {
    s.parse::<Classification>().map_err(|_| {
        ConfigError(format!(
            "upstream `{name}`: {what} `classification` `{}` is not one of `public`, `internal`, `confidential`, `restricted`",
            mandate_core::clip(s)
        ))
    })
}

/// The entries that configure `prompts/get` and `resources/read` rather than a tool: reads
/// unless they say otherwise (a tool the config names without a kind is an execute).
/// The requests of a server to the client (`sampling.createMessage`, `elicitation.create`,
/// `roots.list`) are configured the same way, and are reads too.
pub const READ_ENTRIES: [&str; 5] = ["prompts.get", "resources.read", "sampling.createMessage", "elicitation.create", "roots.list"];

/// Tool names the gateway keeps for methods: every request MCP defines from client to server
/// (2025-11-25 and 2026-07-28) whose name has a `/`, written with dots. The gateway decides
/// `prompts/get` as `UPSTREAM.prompts.get` and `resources/read` as `UPSTREAM.resources.read`,
/// and may come to decide any of the others the same way: a tool of one of these names would
/// share that method's action (and its settings), so it is never listed nor called.
/// One-word methods (`ping`, `initialize`) are not reserved: tools of those names are common
/// and their actions are not method actions.
pub const RESERVED_TOOL_NAMES: [&str; 20] = [
    "tools.call",
    "tools.list",
    "prompts.get",
    "prompts.list",
    "resources.read",
    "resources.list",
    "resources.templates.list",
    "resources.subscribe",
    "resources.unsubscribe",
    "completion.complete",
    "logging.setLevel",
    "tasks.get",
    "tasks.result",
    "tasks.list",
    "tasks.cancel",
    "server.discover",
    "subscriptions.listen",
    // Requests from server to client, decided as `UPSTREAM.` and these.
    "sampling.createMessage",
    "elicitation.create",
    "roots.list",
];

/// Whether a tool of this name would take a method's action name.
pub fn is_reserved_tool_name(tool: &str) -> bool {
    RESERVED_TOOL_NAMES.contains(&tool)
}

/// Whether an action is a method's action of some upstream: `NAME.` and a reserved name.
pub fn is_reserved_action(action: &str) -> bool {
    action.split_once('.').is_some_and(|(upstream, rest)| !upstream.is_empty() && is_reserved_tool_name(rest))
}

fn check_tool(name: &str, tool: &str, t: &ToolFile) -> Result<ToolPolicy, ConfigError> {
    let what = format!("tool `{}`", mandate_core::clip(tool));
    let mut unknown = ToolPolicy::unknown();
    if READ_ENTRIES.contains(&tool) {
        unknown.kind = ActionKind::Read;
    }
    Ok(ToolPolicy {
        kind: t.kind.as_deref().map(|k| parse_kind(name, &what, k)).transpose()?.unwrap_or(unknown.kind),
        classification: t
            .classification
            .as_deref()
            .map(|c| parse_classification(name, &what, c))
            .transpose()?
            .unwrap_or(unknown.classification),
        approval: t.approval.unwrap_or(true),
        log_arguments: t.log_arguments.unwrap_or(false),
        redact: t.redact.clone(),
    })
}

fn check_route(name: &str, r: &RouteFile) -> Result<Route, ConfigError> {
    let what = format!("route `{} {}`", mandate_core::clip(&r.method), mandate_core::clip(&r.path));
    let method = r.method.to_ascii_uppercase();
    if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "*"].contains(&method.as_str()) {
        return err(format!("upstream `{name}`: {what}: `method` must be an HTTP method or `*`"));
    }
    let segments = parse_pattern(&r.path).map_err(|e| ConfigError(format!("upstream `{name}`: {what}: {e}")))?;
    if r.action.is_empty() || r.action.len() > 256 || r.action.chars().any(char::is_whitespace) {
        return err(format!("upstream `{name}`: {what}: `action` must be a non-empty name without spaces"));
    }
    if is_reserved_action(&r.action) {
        return err(format!(
            "upstream `{name}`: {what}: `action` `{}` is the action name of an MCP method; name the route's action otherwise",
            mandate_core::clip(&r.action)
        ));
    }
    let params: Vec<&str> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Param(p) | Segment::Rest(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
        .collect();
    let resource = match &r.resource {
        None => None,
        Some(t) => {
            let Some((kind, id)) = t.split_once(':') else {
                return err(format!("upstream `{name}`: {what}: `resource` must be `type:id`, e.g. `invoice:{{id}}`"));
            };
            if kind.is_empty() || kind.contains('{') {
                return err(format!("upstream `{name}`: {what}: the resource type must be a plain name"));
            }
            let tpl = parse_template(id).map_err(|e| ConfigError(format!("upstream `{name}`: {what}: {e}")))?;
            for seg in &tpl {
                if let Segment::Param(p) = seg
                    && !params.contains(&p.as_str())
                {
                    return err(format!("upstream `{name}`: {what}: `resource` names `{{{p}}}`, which the path does not have"));
                }
            }
            Some((kind.to_owned(), tpl))
        }
    };
    let mut list_params: Vec<String> = Vec::new();
    for p in &r.list_params {
        if p.is_empty() || p.len() > 128 || p.chars().any(char::is_control) {
            return err(format!("upstream `{name}`: {what}: `list_params` entry `{}` must be 1-128 characters", mandate_core::clip(p)));
        }
        if p.eq_ignore_ascii_case(crate::http_request::METHOD_FIELD) {
            return err(format!("upstream `{name}`: {what}: `list_params` cannot name `_method`, which is always refused"));
        }
        if list_params.contains(p) {
            return err(format!("upstream `{name}`: {what}: `list_params` names `{}` twice", mandate_core::clip(p)));
        }
        list_params.push(p.clone());
    }
    let mut headers: Vec<String> = Vec::new();
    for h in &r.headers {
        let lower = h.to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.contains('_') {
            return err(format!(
                "upstream `{name}`: {what}: `headers` entry `{}` is not a header name (letters, digits and `-`)",
                mandate_core::clip(h)
            ));
        }
        if crate::http_request::never_forwarded(&lower) {
            return err(format!("upstream `{name}`: {what}: `headers` entry `{}` is never forwarded", mandate_core::clip(h)));
        }
        if headers.contains(&lower) {
            return err(format!("upstream `{name}`: {what}: `headers` names `{}` twice", mandate_core::clip(h)));
        }
        headers.push(lower);
    }
    let decode_slashes = r.decode_slashes.unwrap_or(false);
    if decode_slashes && !segments.iter().any(|s| matches!(s, Segment::Param(_) | Segment::Rest(_))) {
        return err(format!("upstream `{name}`: {what}: `decode_slashes` needs a path parameter to apply to"));
    }
    Ok(Route {
        method,
        segments,
        action: r.action.clone(),
        kind: parse_kind(name, &what, &r.kind)?,
        classification: parse_classification(name, &what, &r.classification)?,
        resource,
        approval: r.approval.unwrap_or(true),
        decode_slashes,
        list_params,
        headers,
    })
}

/// `/invoices/{id}/lines/{*rest}` → segments.
fn parse_pattern(path: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("`path` must start with `/`".into());
    };
    let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if let Some(rest_name) = inner.strip_prefix('*') {
                if i + 1 != parts.len() {
                    return Err("`{*name}` may only be the last segment".into());
                }
                out.push(Segment::Rest(check_param(rest_name)?));
            } else {
                out.push(Segment::Param(check_param(inner)?));
            }
        } else if p.contains('{') || p.contains('}') {
            return Err(format!("segment `{}` mixes text and a parameter", mandate_core::clip(p)));
        } else if p.is_empty() && i + 1 != parts.len() {
            return Err("`path` has an empty segment".into());
        } else {
            out.push(Segment::Literal((*p).to_owned()));
        }
    }
    Ok(out)
}

fn check_param(p: &str) -> Result<String, String> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("parameter `{}` must be a name of `A-Za-z0-9_`", mandate_core::clip(p)));
    }
    Ok(p.to_owned())
}

/// `{id}-{n}` → literal and parameter pieces.
fn parse_template(t: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        match rest.find('{') {
            None => {
                out.push(Segment::Literal(rest.to_owned()));
                break;
            }
            Some(start) => {
                if start > 0 {
                    out.push(Segment::Literal(rest.get(..start).unwrap_or_default().to_owned()));
                }
                let after = rest.get(start + 1..).unwrap_or_default();
                let Some(end) = after.find('}') else {
                    return Err("unclosed `{` in `resource`".into());
                };
                out.push(Segment::Param(check_param(after.get(..end).unwrap_or_default())?));
                rest = after.get(end + 1..).unwrap_or_default();
            }
        }
    }
    Ok(out)
}

impl Route {
    /// The path parameters if `method` and the decoded path `segments` (as
    /// [`crate::http_request`] reads them) match this route. A `{*rest}` parameter is the
    /// remaining segments joined with `/`.
    pub fn matches(&self, method: &str, segments: &[String]) -> Option<Vec<(String, String)>> {
        if self.method != "*" && !self.method.eq_ignore_ascii_case(method) {
            return None;
        }
        let mut params = Vec::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    if segments.get(i) != Some(l) {
                        return None;
                    }
                }
                Segment::Param(p) => {
                    let v = segments.get(i).filter(|v| !v.is_empty())?;
                    params.push((p.clone(), v.clone()));
                }
                Segment::Rest(p) => {
                    let v = segments.get(i..).map(|s| s.join("/")).unwrap_or_default();
                    params.push((p.clone(), v));
                    return Some(params);
                }
            }
            i += 1;
        }
        (i == segments.len()).then_some(params)
    }

    /// The AuthZEN resource for a matched request: the template filled in, or `route:ACTION`.
    pub fn resource(&self, params: &[(String, String)]) -> (String, String) {
        match &self.resource {
            None => ("route".to_owned(), self.action.clone()),
            Some((kind, tpl)) => {
                let mut id = String::new();
                for seg in tpl {
                    match seg {
                        Segment::Literal(l) => id.push_str(l),
                        Segment::Param(p) | Segment::Rest(p) => {
                            if let Some((_, v)) = params.iter().find(|(k, _)| k == p) {
                                id.push_str(v);
                            }
                        }
                    }
                }
                (kind.clone(), id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayFile::from_toml(text)?.check()
    }

    fn segs(path: &str) -> Vec<String> {
        crate::http_request::parse_path(path).unwrap().into_iter().map(|s| s.value).collect()
    }

    #[test]
    fn a_full_config_checks() {
        let c = check(
            r#"
            [[upstream]]
            name = "github"
            type = "mcp"
            url = "http://127.0.0.1:9000/mcp"
            [upstream.inject]
            header = "Authorization"
            secret = "github-token"
            format = "Bearer {}"
            [upstream.tools."issues.list"]
            kind = "read"
            classification = "internal"
            [upstream.tools."repo.delete"]
            kind = "execute"
            classification = "confidential"
            approval = false

            [[upstream]]
            name = "local"
            type = "mcp"
            command = ["python3", "server.py", "--stdio"]

            [[upstream]]
            name = "billing"
            type = "http"
            url = "http://127.0.0.1:9001/"
            [upstream.inject]
            secret = "billing-key"
            basic_user = "mandate"
            [[upstream.routes]]
            method = "GET"
            path = "/invoices/{id}"
            action = "billing.invoices.read"
            kind = "read"
            classification = "confidential"
            resource = "invoice:{id}"
            "#,
        )
        .unwrap();
        assert_eq!(c.upstreams.len(), 3);
        let gh = &c.upstreams[0];
        assert_eq!(gh.tools["issues.list"].kind, ActionKind::Read);
        assert!(!gh.tools["repo.delete"].approval);
        assert_eq!(gh.inject.as_ref().unwrap().format, InjectFormat::Template { prefix: "Bearer ".into(), suffix: String::new() });
        assert!(matches!(c.upstreams[1].target, Target::McpStdio { .. }));
        let billing = &c.upstreams[2];
        assert_eq!(billing.target, Target::Http { base_url: "http://127.0.0.1:9001".into() });
        let route = &billing.routes[0];
        let params = route.matches("get", &segs("/invoices/inv%2D7")).unwrap();
        assert_eq!(route.resource(&params), ("invoice".to_owned(), "inv-7".to_owned()));
        assert!(route.matches("GET", &segs("/invoices")).is_none());
        assert!(route.matches("GET", &segs("/invoices/1/x")).is_none());
        assert!(route.matches("POST", &segs("/invoices/1")).is_none());
    }

    #[test]
    fn prompt_and_resource_entries_default_to_reads() {
        let c = check(
            r#"
            [[upstream]]
            name = "a"
            type = "mcp"
            url = "http://x/mcp"
            [upstream.tools."prompts.get"]
            classification = "internal"
            [upstream.tools."resources.read"]
            kind = "write"
            [upstream.tools.other]
            classification = "internal"
            "#,
        )
        .unwrap();
        let t = &c.upstreams[0].tools;
        assert_eq!(t["prompts.get"].kind, ActionKind::Read);
        assert_eq!(t["resources.read"].kind, ActionKind::Write, "a configured kind wins");
        assert_eq!(t["other"].kind, ActionKind::Execute, "a tool named without a kind is an execute");
    }

    #[test]
    fn unknown_tools_are_execute_at_restricted() {
        let t = ToolPolicy::unknown();
        assert_eq!((t.kind, t.classification), (ActionKind::Execute, Classification::Restricted));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                r#"[[upstream]]
name = "A"
type = "mcp"
url = "http://x/mcp""#,
                "upstream name `A`",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "grpc"
url = "http://x""#,
                "`type` `grpc`",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "mcp""#,
                "needs `url` or `command`",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "mcp"
url = "http://x/mcp"
[upstream.tools.t]
kind = "delete""#,
                "`kind` `delete`",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "mcp"
url = "http://x/mcp"
[upstream.inject]
secret = "s"
format = "Bearer""#,
                "must contain `{}`",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "http"
url = "http://x"
[[upstream.routes]]
method = "GET"
path = "/x/{id}"
action = "a.x"
kind = "read"
classification = "public"
resource = "x:{other}""#,
                "which the path does not have",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "mcp"
url = "http://x/mcp"
[[upstream]]
name = "a"
type = "mcp"
url = "http://y/mcp""#,
                "configured twice",
            ),
            (
                r#"[[upstream]]
name = "a"
type = "mcp"
url = "http://x/mcp"
colour = "red""#,
                "unknown field `colour`",
            ),
        ];
        for (text, expected) in cases {
            let e = check(text).unwrap_err();
            assert!(e.0.contains(expected), "{text}\n→ {e}");
        }
    }

    #[test]
    fn route_request_keys_are_checked() {
        let route = |extra: &str| {
            check(&format!(
                "[[upstream]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://x\"\n[[upstream.routes]]\nmethod = \"GET\"\npath = \"/x/{{id}}\"\naction = \"api.x\"\nkind = \"read\"\nclassification = \"public\"\n{extra}"
            ))
        };
        let ok = route("decode_slashes = true\nlist_params = [\"tag\"]\nheaders = [\"X-Tenant\"]").unwrap();
        let r = &ok.upstreams[0].routes[0];
        assert!(r.decode_slashes);
        assert_eq!((r.list_params.as_slice(), r.headers.as_slice()), (["tag".to_owned()].as_slice(), ["x-tenant".to_owned()].as_slice()));
        let defaults = route("").unwrap();
        let d = &defaults.upstreams[0].routes[0];
        assert!(!d.decode_slashes && d.list_params.is_empty() && d.headers.is_empty());
        for (extra, expected) in [
            ("list_params = [\"_method\"]", "upstream `api`: route `GET /x/{id}`: `list_params` cannot name `_method`"),
            ("list_params = [\"a\", \"a\"]", "`list_params` names `a` twice"),
            ("list_params = [\"\"]", "`list_params` entry `` must be"),
            ("headers = [\"x_tenant\"]", "`headers` entry `x_tenant` is not a header name"),
            ("headers = [\"Authorization\"]", "`headers` entry `Authorization` is never forwarded"),
            ("headers = [\"x-forwarded-for\"]", "is never forwarded"),
            ("headers = [\"a\", \"A\"]", "`headers` names `A` twice"),
            ("decode_slash = true", "unknown field `decode_slash`"),
        ] {
            let e = route(extra).unwrap_err();
            assert!(e.0.contains(expected), "{extra}\n→ {e}");
        }
        let literal = check(
            "[[upstream]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://x\"\n[[upstream.routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"api.x\"\nkind = \"read\"\nclassification = \"public\"\ndecode_slashes = true",
        );
        assert!(literal.unwrap_err().0.contains("`decode_slashes` needs a path parameter"));
    }

    #[test]
    fn method_names_are_reserved() {
        assert!(is_reserved_tool_name("resources.read") && is_reserved_tool_name("tools.call"));
        assert!(!is_reserved_tool_name("issues.list") && !is_reserved_tool_name("ping") && !is_reserved_tool_name("tools"));
        assert!(is_reserved_action("github.prompts.get") && is_reserved_action("billing.resources.templates.list"));
        assert!(!is_reserved_action("prompts.get") && !is_reserved_action("github.issues.list") && !is_reserved_action(".tools.call"));
        let mcp = |tool: &str| {
            check(&format!(
                "[[upstream]]\nname = \"gh\"\ntype = \"mcp\"\nurl = \"http://x/mcp\"\n[upstream.tools.\"{tool}\"]\nkind = \"read\"\n"
            ))
        };
        for tool in ["tools.call", "tools.list", "resources.templates.list", "logging.setLevel", "server.discover"] {
            let e = mcp(tool).unwrap_err();
            assert!(e.0.contains("upstream `gh`") && e.0.contains(&format!("tool `{tool}`")), "{e}");
        }
        // The two method-setting entries stay what they were.
        assert!(mcp("prompts.get").is_ok() && mcp("resources.read").is_ok() && mcp("tools.search").is_ok());
        let route = |action: &str| {
            check(&format!(
                "[[upstream]]\nname = \"billing\"\ntype = \"http\"\nurl = \"http://x\"\n[[upstream.routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"{action}\"\nkind = \"read\"\nclassification = \"public\"\n"
            ))
        };
        let e = route("github.resources.read").unwrap_err();
        assert!(e.0.contains("upstream `billing`") && e.0.contains("`github.resources.read`"), "{e}");
        assert!(route("billing.tools.call").is_err());
        assert!(route("billing.invoices.read").is_ok());
    }

    #[test]
    fn rest_parameters_take_the_remaining_path() {
        let pattern = parse_pattern("/files/{*path}").unwrap();
        let r = Route {
            method: "*".into(),
            segments: pattern,
            action: "fs.read".into(),
            kind: ActionKind::Read,
            classification: Classification::Internal,
            resource: Some(("file".into(), parse_template("{path}").unwrap())),
            approval: true,
            decode_slashes: false,
            list_params: Vec::new(),
            headers: Vec::new(),
        };
        let p = r.matches("GET", &segs("/files/a/b.txt")).unwrap();
        assert_eq!(r.resource(&p).1, "a/b.txt");
        assert!(parse_pattern("/files/{*path}/x").is_err());
    }
}
