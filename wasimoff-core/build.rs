//! Compiles `proto/wasimoff/v1/messages.proto` with protox (pure Rust, no system `protoc`) into
//! prost types, and generates proto3-JSON serde impls for them with pbjson.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/wasimoff/v1/messages.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("wasimoff_descriptor.bin");

    let fds = protox::compile([proto], ["proto"])?;
    let bytes = prost::Message::encode_to_vec(&fds);
    std::fs::write(&descriptor_path, &bytes)?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf.Any", "::pbjson_types::Any")
        // pbjson-types renders timestamps as `+00:00`; the wire wants `Z` (see wkt.rs).
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .bytes(["."])
        .enable_type_names()
        .type_name_domain(["."], "wasimoff")
        .compile_protos(&[proto], &["proto"])?;

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        // Unknown JSON fields are skipped, as the original peers do (newer peers may add some).
        .ignore_unknown_fields()
        .build(&[".wasimoff.v1"])?;
    Ok(())
}
