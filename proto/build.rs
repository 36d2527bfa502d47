//! Compiles `proto/sluice/v1/*.proto` with the system `protoc` and writes a file descriptor set
//! for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "proto/sluice/v1/errors.proto",
        "proto/sluice/v1/metadata_records.proto",
        "proto/sluice/v1/admin.proto",
        "proto/sluice/v1/log.proto",
        "proto/sluice/v1/groups.proto",
    ];
    tonic_prost_build::configure()
        .bytes(".")
        // Ordered, so a record encodes the same way every time it is written.
        .btree_map(".sluice.v1.PartitionStateRecord.isr_incarnations")
        .file_descriptor_set_path(out_dir.join("sluice_descriptor.bin"))
        .compile_protos(&files, &["proto"])?;
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
