//! `mandate-demo-tools`: the demo MCP tool server as a standalone process.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use mandate_demo_tools::{DemoToolsOptions, MCP_PATH, serve_with_shutdown};

/// Demo MCP tool server (tickets.search, tickets.export, email.send, deploy.production) over
/// streamable HTTP at /mcp.
#[derive(Debug, Parser)]
#[command(name = "mandate-demo-tools", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Refuse MCP requests (401) that lack `Authorization: Bearer SECRET`.
    #[arg(long, env = "DEMO_TOOLS_BEARER", value_name = "SECRET", hide_env_values = true)]
    require_bearer: Option<String>,
    /// Extra `Host` header value the MCP endpoint accepts (repeatable); by default only
    /// loopback names are accepted.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let mut allowed_hosts = args.allow_hosts;
    if !allowed_hosts.is_empty() {
        allowed_hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    }
    let opts = DemoToolsOptions { require_bearer: args.require_bearer.filter(|s| !s.is_empty()), allowed_hosts };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mandate-demo-tools: listening on http://{addr}{MCP_PATH}")?;
        out.flush()?;
    }
    serve_with_shutdown(listener, opts, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
