//! Generates the tonic client and server of the integration tests' echo service
//! (`tests/proto/echo.proto`) into OUT_DIR. Only `tests/it/echo_proto.rs` includes it; the
//! library and binary never do, so this is the only effect a build script has on them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through PROTOC; a build script is single-threaded here.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=tests/proto/echo.proto");
    println!("cargo:rerun-if-changed=build.rs");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_protos(&["tests/proto/echo.proto"], &["tests/proto"])?;
    Ok(())
}
