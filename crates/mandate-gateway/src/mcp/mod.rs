//! The MCP side of the gateway: JSON-RPC messages, upstream links, the client endpoint.

pub mod handler;
pub mod jsonrpc;
pub mod upstream;
pub mod uri;
