//! The benchmark suite of issue 14, run by hand (`bench/run.sh`): a load driver in Rust, the
//! fake upstream it needs, and the baselines measured in the same run, so every figure is a
//! difference or a ratio taken side by side. It prints figures and never fails on timing.
//!
//! - `suite`: `chat-bench run`, the whole run in order; `report`: the markdown it prints.
//! - `upstream`: the fake OpenAI-compatible upstream (`chat-fake-llm`) as a process of its own.
//! - `systems`: our stack (`chatctl dev`, on SQLite or PostgreSQL) and the Node `ws` relay as
//!   child processes.
//! - `client`: the driver's clients for the three protocols, timing each reply.
//! - `load`: what the scenarios share (targets, opening sockets, CPU readings).
//! - `streams`, `turns`, `fanout`, `growth`, `idle`, `soak`: the scenarios.
//! - `procs`: child processes and `/proc` readings; `stats`: percentiles.

pub mod client;
pub mod fanout;
pub mod growth;
pub mod idle;
pub mod load;
pub mod procs;
pub mod report;
pub mod soak;
pub mod stats;
pub mod streams;
pub mod suite;
pub mod systems;
pub mod turns;
pub mod upstream;
