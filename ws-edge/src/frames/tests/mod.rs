//! Tests of the frame codec, by concern: decoding ([`decode`]), encoding ([`encode`]), the
//! examples of `docs/protocol.md` ([`docs`]), and properties over random input
//! ([`properties`]).

mod decode;
mod docs;
mod encode;
mod properties;

use chat_proto::pb::chat::{
    self as pb, ClientEvent, ServerEvent, client_event::Event as ClientKind,
    server_event::Event as ServerKind,
};
use serde_json::Value;

use super::{FrameError, Limits, decode_client_frame, encode_server_event};

fn decode(frame: Value) -> Result<ClientEvent, FrameError> {
    decode_client_frame(&frame.to_string(), &Limits::default())
}

fn decoded(frame: Value) -> ClientKind {
    decode(frame.clone())
        .unwrap_or_else(|err| panic!("{frame} failed: {err}"))
        .event
        .unwrap()
}

fn rendered(event: ServerKind) -> Value {
    let ev = ServerEvent {
        timestamp_ms: 1_700_000_000_000,
        seq: None,
        event: Some(event),
    };
    serde_json::from_str(&encode_server_event(&ev)).unwrap()
}
