//! `chat-core`: owns all chat logic and serves it over gRPC.
//!
//! Module map:
//! - [`config`]: typed settings (defaults < TOML < `CHAT_*` env).
//! - [`startup`]: builds the [`chat::Engine`] and runs the gRPC server until cancelled.
//! - [`auth`]: authenticates every gRPC call from its `authorization` metadata.
//! - [`grpc`]: adapters only, protobuf <-> domain ([`grpc::chat`], [`grpc::admin`]).
//! - [`chat`]: the domain: sessions, rooms and fan-out, the per-stream handler, reply turns.
//! - [`llm`]: providers behind one trait (OpenAI-compatible, Anthropic, demo), retries.
//! - [`notify`]: operator alerts (help requests, critical errors) by email and SMS, rate limited.
//! - [`storage`]: diesel-async on SQLite or PostgreSQL, one query path for both.
//! - [`crypto`]: encryption at rest (the keyring; sealed text columns and file contents).
//! - [`types`]: closed vocabularies (roles, statuses, presence) shared by the modules above.

pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod files;
pub mod grpc;
pub mod llm;
pub mod notify;
pub mod startup;
pub mod storage;
pub mod types;

pub use config::Settings;
pub use startup::Application;
