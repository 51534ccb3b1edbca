//! Compiles proto/cluster.proto with a vendored protoc, so building needs no system install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_dir.join("cluster.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[proto.as_path()],
        &[proto_dir.as_path()],
    )?;
    Ok(())
}
