//! Generates the prost messages and tonic clients/servers from `proto/`.
//! Needs `protoc` (Debian's protobuf-compiler, installed by
//! scripts/setup-host.sh) or `PROTOC` pointing at one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/agent/agent.proto",
        "proto/cvms/cvms.proto",
        "proto/runner/runner.proto",
        "proto/log/log.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
