//! The `tessera` package's library half: what the CLI (`src/main.rs`) and the end-to-end tests
//! share. The subcommands themselves live in the binary.

pub mod fault;
pub mod http;
pub mod serve;
pub mod specialize;
pub mod train;
pub mod workload;
