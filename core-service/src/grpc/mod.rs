//! gRPC adapters: protobuf requests in, domain calls, protobuf responses out. No chat logic
//! lives here; [`convert`] is the only code that knows both the wire and the domain.

pub mod admin;
pub mod chat;
pub mod convert;
