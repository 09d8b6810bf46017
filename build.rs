//! Build script: stamps the git revision into the binary (`APERTURE_GIT_REV`, printed by
//! `aperture --version`; "unknown" in a build from a tarball without `.git`, see
//! `build/git_revision.rs`), and generates into OUT_DIR the tonic client and server of the admin
//! API (`proto/admin.proto`, Go aperture's `adminrpc.Admin`, included by `src/admin/proto.rs`)
//! and of the integration tests' echo service (`tests/proto/echo.proto`, included only by
//! `tests/it/echo_proto.rs`; the library and binary never do).

#[path = "build/git_revision.rs"]
mod git_revision;

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/git_revision.rs");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-env-changed={}", git_revision::OVERRIDE);
    for path in git_revision::watched_files(&dir) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let override_rev = std::env::var(git_revision::OVERRIDE).ok();
    let rev = git_revision::git_revision(&dir, override_rev.as_deref());
    println!("cargo:rustc-env={}={rev}", git_revision::OVERRIDE);

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through PROTOC; a build script is single-threaded here.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/admin.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_protos(&["proto/admin.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=tests/proto/echo.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_protos(&["tests/proto/echo.proto"], &["tests/proto"])?;
    Ok(())
}
