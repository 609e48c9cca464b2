//! The chat domain: every operation a client can ask for, in the domain's own types and
//! independent of transport. The gRPC adapters ([`crate::grpc`]) decode requests into
//! [`command`]s and call the [`Engine`]; its answers and live deliveries are [`event`]s, which
//! the adapters encode. Nothing here knows protobuf or WebSockets.
//!
//! - [`engine`]: the shared state, connection lifecycle, access checks, durable publishing;
//!   [`clock`]: what "now" is for it.
//! - [`handler`]: one connection's loop; it only dispatches commands to the engine.
//! - [`messages`], [`chats`], [`presence`], [`resume`], [`operator`], [`lifecycle`]: the
//!   operations, by concern; [`monitor`] and [`watch`]: what operators see, listed and live;
//!   [`takeover`]: an operator's takeover as one stream; [`retention`]: deleting sessions and
//!   files, by age or by an admin.
//! - [`turn`], [`prompt`]: one assistant reply, streamed and stored; what the model is sent;
//!   [`voice`]: voice messages transcribed, replies spoken; [`recovery`]: the replies a restart
//!   finds owed; [`failover`]: with several cores, the replies of a core that died;
//!   [`reply_order`]: the line each chat's replies wait in.
//! - [`rooms`]: who is connected and joined where; per-chat ordering locks.
//! - [`validate`], [`limits`]: client input into checked values; per-user rate limits.
//! - [`command`], [`event`], [`error`]: the domain's vocabulary in and out, and its failures.
//!
//! Durable events (messages, receipts, chat updates, operator changes) are stored with the
//! chat's next `seq` and then delivered, under the chat's [`rooms::Sequencer`] lock, so every
//! joined connection sees them in `seq` order. Replies run as their own tasks ([`turn`]),
//! detached from the connection that asked, so a dropped connection never stops a reply.

pub mod chats;
pub mod clock;
pub mod command;
pub mod context;
pub mod encryption;
pub mod engine;
pub mod error;
pub mod event;
pub mod failover;
pub mod handler;
pub mod lifecycle;
pub mod limits;
pub mod messages;
pub mod monitor;
pub mod operator;
#[cfg(test)]
mod ordering_tests;
pub mod presence;
pub mod prompt;
pub mod recovery;
pub mod reply_order;
pub mod resume;
pub mod retention;
pub mod rooms;
pub mod takeover;
#[cfg(test)]
mod testing;
pub mod turn;
pub mod validate;
pub mod voice;
pub mod watch;

pub use engine::Engine;
pub use error::ChatError;

/// The user id of the assistant on the wire.
pub const ASSISTANT: &str = "assistant";
