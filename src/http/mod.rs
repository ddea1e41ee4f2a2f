//! `tessera serve` and `tessera bench serve`: an OpenAI-compatible HTTP server over the
//! serving engine, with iteration-level scheduling, and a load generator for it.
//!
//! Threads: the engine (whose CPU executors are not `Send`) lives on one scheduler thread
//! ([`scheduler`]), which owns every sequence and the KV cache; the HTTP front end
//! ([`server`], axum on a two-worker tokio runtime) parses and checks requests ([`api`]) and
//! hands them over a channel, each with its own channel back for events (accepted, text,
//! finished, failed). A handler that goes away (the client hung up) closes its channel, which
//! the scheduler notices at the next iteration and frees the sequence's blocks. Metrics
//! ([`metrics`]) are written by the scheduler (once per iteration, not per token) and read by
//! `GET /metrics`. A streaming handler writes whatever events are queued when it wakes as one
//! HTTP chunk of server-sent events, each text chunk precomposed JSON around the escaped text.
//!
//! [`client`] is a small HTTP/1.1 client (blocking, and async for the load generator);
//! [`bench`] drives a server with it from one thread.

pub mod api;
pub mod bench;
pub mod client;
pub mod metrics;
pub mod scheduler;
pub mod server;
