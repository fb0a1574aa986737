//! Regenerates the Rust code and descriptor set from `proto/` and checks that
//! the committed copies under `src/gen/` match byte for byte.
//!
//! With `OUTRIGGER_REGEN_PROTO=1` the test rewrites the committed files instead
//! of comparing. Everything is pure Rust (protox, prost-build, tonic-build):
//! no `protoc`, no build script.

use std::fs;
use std::path::{Path, PathBuf};

/// The environment variable that switches from checking to rewriting.
const REGEN_VAR: &str = "OUTRIGGER_REGEN_PROTO";

/// Packages the operator serves, not the sidecar: kept out of the reflection descriptor set.
const OPERATOR_PACKAGE: &str = "outrigger.";

/// The committed descriptor set, next to the generated modules.
const DESCRIPTOR_FILE: &str = "descriptor.bin";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.proto` file under `dir`, sorted so compilation order is stable.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Files produced by one generation run: `(file name, contents)`, sorted by name.
fn generate(proto_dir: &Path, out_dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let files = proto_files(proto_dir)?;
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        proto_dir.display()
    );

    // Every file, imports included (prost-build resolves the well-known types
    // through them and maps them to `::prost_types`), with source info so
    // comments become docs.
    let mut compiler = protox::Compiler::new([proto_dir])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?;
    // Reflection clients (grpcurl) also need the wrapper types, so that `Any` payloads can be
    // written as `google.protobuf.StringValue` or `BytesValue`; prost maps them to Rust types.
    compiler.open_file("google/protobuf/wrappers.proto")?;
    let fds = compiler.file_descriptor_set();

    // The committed set serves the sidecar's gRPC reflection, which needs no comments and lists
    // only what the sidecar serves: the operator's own services stay out.
    let mut reflection = fds.clone();
    reflection
        .file
        .retain(|file| !file.package().starts_with(OPERATOR_PACKAGE));
    for file in &mut reflection.file {
        file.source_code_info = None;
    }
    let descriptor = prost::Message::encode_to_vec(&reflection);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .generate_default_stubs(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)?;

    let mut generated = vec![(DESCRIPTOR_FILE.to_owned(), descriptor)];
    for entry in fs::read_dir(out_dir)? {
        let path = entry?.path();
        let name = file_name(&path)?;
        generated.push((name, fs::read(&path)?));
    }
    generated.sort();
    Ok(generated)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("unexpected file name: {}", path.display()).into())
}

/// Names of the files currently committed under `gen_dir`, sorted.
fn committed_names(gen_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(gen_dir)? {
        let path = entry?.path();
        if path.is_file() {
            names.push(file_name(&path)?);
        }
    }
    names.sort();
    Ok(names)
}

#[test]
fn generated_code_is_up_to_date() -> Result<()> {
    let root = crate_dir();
    let proto_dir = root.join("proto");
    let gen_dir = root.join("src").join("gen");
    let out = tempfile::tempdir()?;

    let generated = generate(&proto_dir, out.path())?;
    let expected_names: Vec<String> = generated.iter().map(|(name, _)| name.clone()).collect();

    if std::env::var_os(REGEN_VAR).is_some_and(|v| v == "1") {
        fs::create_dir_all(&gen_dir)?;
        for name in committed_names(&gen_dir)? {
            if !expected_names.contains(&name) {
                fs::remove_file(gen_dir.join(&name))?;
            }
        }
        for (name, contents) in &generated {
            fs::write(gen_dir.join(name), contents)?;
        }
        return Ok(());
    }

    let hint = format!(
        "rerun with `{REGEN_VAR}=1 cargo test -p outrigger-proto --test codegen` \
         to regenerate, then commit src/gen/"
    );

    let committed = if gen_dir.is_dir() {
        committed_names(&gen_dir)?
    } else {
        Vec::new()
    };
    assert_eq!(
        committed, expected_names,
        "the files in src/gen/ are not the generated set; {hint}"
    );

    let stale: Vec<&str> = generated
        .iter()
        .filter(|(name, contents)| fs::read(gen_dir.join(name)).ok().as_ref() != Some(contents))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        stale.is_empty(),
        "src/gen/ is out of date with proto/ ({}); {hint}",
        stale.join(", ")
    );
    Ok(())
}
