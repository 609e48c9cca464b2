//! The gRPC contract between every process of the product, generated from `chat/v1/*.proto`
//! and `admin/v1/*.proto` at build time. `pb::chat` mirrors the browser protocol of
//! `docs/protocol.md` one frame to one message; `pb::admin` serves operators.
//!
//! Beside the generated code, the protocol facts every process shares: [`limits`] (bounds,
//! defaults, error and close codes) and [`json`] (`google.protobuf.Struct` <-> JSON).

/// Generated protobuf types and gRPC stubs. Modules nest as the packages do (`chat.v1` is
/// `pb::chat::v1`, which admin.v1's generated code refers to); each package's current version
/// is re-exported one level up, so callers write `pb::chat::ClientEvent`.
pub mod pb {
    pub mod chat {
        /// `chat.v1`: the chat stream and the unary calls internal services use.
        pub mod v1 {
            #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
            tonic::include_proto!("chat.v1");
        }
        pub use v1::*;
    }
    pub mod admin {
        /// `admin.v1`: operator calls (monitoring, takeover, usage).
        pub mod v1 {
            #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
            tonic::include_proto!("admin.v1");
        }
        pub use v1::*;
    }
}

pub mod codec;
pub mod json;
pub mod limits;

/// Encoded descriptor set of both packages, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("chat_descriptor");
