//! The protobuf codec every generated client and server uses: prost encoding with small
//! initial buffers. tonic's default reserves 8 KiB to encode and 8 KiB to decode for every
//! stream on each side; a chat connection is a long-lived stream of small events, so with tens
//! of thousands of idle connections those buffers would dominate memory. Buffers still grow
//! for larger messages.
//!
//! Decoding is prost's with one exception: a `ClientEvent` that does not decode (malformed, or
//! nested past prost's recursion limit of 100) becomes [`undecodable_frame`] instead of an
//! error, so the core answers that one frame with an error and the stream goes on. tonic puts
//! a stream whose decoder failed into a state it cannot recover from, so the failure must not
//! reach it.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::pb::chat::ClientEvent;

/// The `message_id` of the event [`ChatCodec`] yields for a client frame it could not decode
/// (no client sends it: ids are at most 64 printable characters).
pub const UNDECODABLE_FRAME: &str = "\u{0}undecodable";

/// The stand-in for a client frame that did not decode: no event, [`UNDECODABLE_FRAME`] as id.
pub fn undecodable_frame() -> ClientEvent {
    ClientEvent {
        message_id: UNDECODABLE_FRAME.to_string(),
        ..ClientEvent::default()
    }
}

/// Initial encode/decode buffer per stream (four per chat connection: each side encodes and
/// decodes). Most events are a few hundred bytes; a larger one grows the buffer.
const BUFFER_SIZE: usize = 256;
/// Encoded bytes after which a streaming encoder yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct ChatCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ChatCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for ChatCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ChatDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ChatDecoder(PhantomData)
    }
}

/// prost decoding, except for client frames that do not decode (see the module comment).
#[derive(Debug, Clone, Copy)]
pub struct ChatDecoder<U>(PhantomData<U>);

impl<U> Decoder for ChatDecoder<U>
where
    U: prost::Message + Default + 'static,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        match U::decode(&mut *buf) {
            Ok(message) => Ok(Some(message)),
            Err(error) if TypeId::of::<U>() == TypeId::of::<ClientEvent>() => {
                // Skip what prost left of the message, so the next one starts at its header.
                buf.advance(buf.remaining());
                let frame: Box<dyn Any> = Box::new(undecodable_frame());
                match frame.downcast::<U>() {
                    Ok(frame) => Ok(Some(*frame)),
                    // Unreachable: U is ClientEvent (checked above).
                    Err(_) => Err(Status::internal(error.to_string())),
                }
            }
            Err(error) => Err(Status::internal(error.to_string())),
        }
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
