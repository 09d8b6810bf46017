//! Generates the lnd gRPC clients and servers (`lnrpc.Lightning`, `routerrpc.Router`) from the
//! vendored, trimmed `proto/lightning.proto` and `proto/router.proto`, and the dynamic
//! pricer's (`pricesrpc.Prices`) from `proto/prices.proto`. `protoc` comes from
//! `protoc-bin-vendored`, so building needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through PROTOC; a build script is single-threaded here.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/lightning.proto");
    println!("cargo:rerun-if-changed=proto/router.proto");
    println!("cargo:rerun-if-changed=proto/prices.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // We bring our own TLS connector; no `connect(dst)` helper on tonic's transport.
        .build_transport(false)
        .compile_protos(
            &[
                "proto/lightning.proto",
                "proto/router.proto",
                "proto/prices.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
