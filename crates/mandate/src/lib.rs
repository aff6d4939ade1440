//! The `mandate` binary: the CLI, configuration, wiring of the server, and the demo.

pub mod cli;
mod commands;
pub mod config;
mod demo;
mod gateway;
mod offline;
pub mod serve;
mod storage;
