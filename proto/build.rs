//! Compiles `chat/v1` and `admin/v1` with protox (pure Rust), so `cargo build` needs no protoc.

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["chat/v1/chat.proto", "admin/v1/admin.proto"], ["."])?;
    std::fs::write(out.join("chat_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `ChatService.Connect` would collide with the generated `connect()` constructor;
        // clients are built from a `Channel` with `new()` instead.
        .build_transport(false)
        // Small per-stream buffers: see src/codec.rs.
        .codec_path("crate::codec::ChatCodec")
        .compile_fds(fds)?;
    // compile_fds does not emit this itself.
    println!("cargo:rerun-if-changed=chat");
    println!("cargo:rerun-if-changed=admin");
    Ok(())
}
