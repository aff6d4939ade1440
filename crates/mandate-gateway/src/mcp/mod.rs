//! The MCP side of the gateway: JSON-RPC messages, upstream links, what is relayed besides
//! answers, the client endpoint.

pub mod handler;
pub mod jsonrpc;
pub mod relay;
pub mod upstream;
pub mod uri;
