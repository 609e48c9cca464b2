//! gRPC adapters: protobuf requests in, domain calls, protobuf responses out. No chat logic
//! lives here.

pub mod admin;
pub mod chat;
