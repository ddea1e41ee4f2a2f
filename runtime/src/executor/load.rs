//! Loading an artifact: the manifest, integrity of every file, and the program's consistency.

use super::ArtifactError;
use std::path::{Path, PathBuf};
use tessera_ir::artifact::{
    sha256_hex, signature_table, GpuProgram, KernelSignature, LibraryCall, Location, Manifest, Program, Step,
    ALIGNMENT, FIRST_READABLE_FORMAT_VERSION, FORMAT_VERSION, KERNEL_SIGNATURES_SYMBOL, MANIFEST_FILE,
};

/// A loaded, checked artifact: the manifest and one rank's program (rank 0 unless loaded with
/// [`load_rank`]).
#[derive(Debug)]
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub program: Program,
    /// The rank's directory, where the program's files live.
    pub rank_dir: PathBuf,
    pub weights: Vec<u8>,
    /// The CPU kernels object's bytes as checked (SHA-256 and signature table): the executor
    /// loads these, never the file again (see [`super::sealed`]).
    pub kernels_object: Option<Vec<u8>>,
    /// Each GPU kernel's PTX and cubin bytes as checked, by their path relative to the rank's
    /// directory: the CUDA executor loads these, never the files again.
    pub gpu_code: Vec<(String, Vec<u8>)>,
}

impl Artifact {
    /// The checked bytes of the GPU code file `rel` (a `ptx_file` or `cubin_file` of the program).
    pub fn gpu_code(&self, rel: &str) -> Option<&[u8]> {
        self.gpu_code.iter().find(|(path, _)| path == rel).map(|(_, bytes)| bytes.as_slice())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ArtifactError::MissingFile { path: path.to_path_buf() },
        _ => ArtifactError::Io { path: path.to_path_buf(), source },
    })
}

/// A path from the manifest, which must stay inside the artifact.
fn inside(dir: &Path, rel: &str, manifest: &Path) -> Result<PathBuf, ArtifactError> {
    let p = Path::new(rel);
    let plain = p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || rel.is_empty() {
        let message = format!("file path '{rel}' leaves the artifact directory");
        return Err(ArtifactError::Malformed { path: manifest.to_path_buf(), message });
    }
    Ok(dir.join(p))
}

/// Only the version of a manifest, read before the rest.
#[derive(serde::Deserialize)]
struct FormatVersion {
    format_version: Option<u64>,
}

/// Reads `dir/manifest.json`, checks the format version and every listed file's SHA-256, and
/// checks rank 0's program.
pub fn load(dir: &Path) -> Result<Artifact, ArtifactError> {
    load_rank(dir, 0)
}

/// Reads and parses `dir/manifest.json` after checking its format version (no file checks).
pub fn read_manifest(dir: &Path) -> Result<Manifest, ArtifactError> {
    read_manifest_expecting(dir, None)
}

/// [`read_manifest`], refusing a manifest whose SHA-256 is not `expected` (hex, either case)
/// when one is given, before parsing it.
pub fn read_manifest_expecting(dir: &Path, expected: Option<&str>) -> Result<Manifest, ArtifactError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.is_file() {
        return Err(ArtifactError::NotAnArtifact { dir: dir.to_path_buf() });
    }
    let bytes = read(&manifest_path)?;
    if let Some(expected) = expected {
        check_expected_sha256(&bytes, expected, &manifest_path)?;
    }
    parse_manifest(&bytes, &manifest_path)
}

/// The manifest's bytes against the SHA-256 a deployment expects (`--expect-sha256`).
fn check_expected_sha256(bytes: &[u8], expected: &str, path: &Path) -> Result<(), ArtifactError> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown = tessera_ir::quote::clip(&expected).into_owned();
        return Err(ArtifactError::ExpectedHash { expected: shown });
    }
    let found = sha256_hex(bytes);
    if found != expected {
        return Err(ArtifactError::ManifestHash { path: path.to_path_buf(), found, expected });
    }
    Ok(())
}

/// Parses the bytes of a `manifest.json` (`path` is for messages): the format version first, so
/// an artifact of another format says so rather than "malformed", then the rest.
pub fn parse_manifest(bytes: &[u8], path: &Path) -> Result<Manifest, ArtifactError> {
    let malformed =
        |e: serde_json::Error| ArtifactError::Malformed { path: path.to_path_buf(), message: e.to_string() };
    let version = serde_json::from_slice::<FormatVersion>(bytes).map_err(malformed)?.format_version;
    match version {
        Some(v) if (u64::from(FIRST_READABLE_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => {}
        Some(v) => {
            return Err(ArtifactError::FormatVersion {
                path: path.to_path_buf(),
                found: u32::try_from(v).unwrap_or(u32::MAX),
                expected: FORMAT_VERSION,
            })
        }
        None => {
            let message = "no format_version".to_string();
            return Err(ArtifactError::Malformed { path: path.to_path_buf(), message });
        }
    }
    serde_json::from_slice(bytes).map_err(malformed)
}

/// The contents of every file of `rank`, each checked against the SHA-256 the manifest lists
/// (paths relative to the artifact root, as listed).
pub(crate) fn checked_files(
    dir: &Path,
    rank: &tessera_ir::artifact::RankEntry,
) -> Result<Vec<(String, Vec<u8>)>, ArtifactError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut contents = Vec::new();
    for file in &rank.files {
        let path = inside(dir, &file.path, &manifest_path)?;
        let data = read(&path)?;
        let found = sha256_hex(&data);
        if found != file.sha256 {
            return Err(ArtifactError::HashMismatch { path, found, expected: file.sha256.clone() });
        }
        contents.push((file.path.clone(), data));
    }
    Ok(contents)
}

/// Parses the bytes of a rank's `program.json` (`path` is for messages) and checks it against
/// its own invariants and a weights image of `weights_bytes` bytes: what [`load_rank`] does once
/// the files' checksums match (the artifact fuzz target drives it directly).
pub fn parse_program(bytes: &[u8], weights_bytes: u64, path: &Path) -> Result<Program, ArtifactError> {
    let program: Program = serde_json::from_slice(bytes)
        .map_err(|e| ArtifactError::Malformed { path: path.to_path_buf(), message: e.to_string() })?;
    check_program(&program, weights_bytes)
        .map_err(|message| ArtifactError::InvalidProgram { path: path.to_path_buf(), message })?;
    Ok(program)
}

/// [`load`] for the program of rank `rank` (the manifest's entry at that index, which must say
/// it is that rank): its files' SHA-256 and its consistency are checked, other ranks' are not.
pub fn load_rank(dir: &Path, rank: usize) -> Result<Artifact, ArtifactError> {
    load_rank_expecting(dir, rank, None)
}

/// [`load_rank`] of an artifact whose `manifest.json` must have the SHA-256 `expected` (when
/// given): checked on the bytes that are then parsed, before any other file is read.
pub fn load_rank_expecting(dir: &Path, rank: usize, expected: Option<&str>) -> Result<Artifact, ArtifactError> {
    let manifest = read_manifest_expecting(dir, expected)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let Some(entry) = manifest.ranks.get(rank) else {
        let message = match manifest.ranks.len() {
            0 => "no ranks".to_string(),
            n => format!("no rank {rank} (the artifact has {n})"),
        };
        return Err(ArtifactError::Malformed { path: manifest_path, message });
    };
    if entry.rank as usize != rank {
        let message = format!("rank entry {rank} says it is rank {}", entry.rank);
        return Err(ArtifactError::Malformed { path: manifest_path, message });
    }
    if !manifest.dims.is_empty() {
        let ranges: Vec<String> = manifest.dims.iter().map(ToString::to_string).collect();
        let message = format!(
            "a range artifact ({}): it holds a symbolic program, which executor::ranged runs, not program.json",
            ranges.join(", ")
        );
        return Err(ArtifactError::Malformed { path: manifest_path, message });
    }
    let rank = entry;
    let mut contents = checked_files(dir, rank)?;
    let take = |rel: &str, contents: &mut Vec<(String, Vec<u8>)>| -> Result<Vec<u8>, ArtifactError> {
        let i = contents.iter().position(|(p, _)| p == rel).ok_or_else(|| ArtifactError::Malformed {
            path: manifest_path.clone(),
            message: format!("'{rel}' is used but not listed with a checksum"),
        })?;
        Ok(contents.swap_remove(i).1)
    };
    let program_path = inside(dir, &rank.program, &manifest_path)?;
    let program: Program = serde_json::from_slice(&take(&rank.program, &mut contents)?)
        .map_err(|e| ArtifactError::Malformed { path: program_path.clone(), message: e.to_string() })?;
    let rank_dir = program_path.parent().map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
    let rank_prefix = rank.program.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
    let weights = take(&format!("{rank_prefix}{}", program.weights_file), &mut contents)?;
    let mut kernels_object = None;
    if let Some(kernels) = &program.kernels_file {
        // Checked above; its signature table is compared with the program's below, and the
        // executor loads these bytes (dlopen runs an object's initializers: a foreign object is
        // refused from its bytes, and the file is never reopened after the check).
        kernels_object = Some((
            inside(&rank_dir, kernels, &manifest_path)?,
            take(&format!("{rank_prefix}{kernels}"), &mut contents)?,
        ));
    }
    let mut gpu_code: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(gpu) = &program.gpu {
        // Checked above; the CUDA executor loads these bytes. A path may not leave the
        // artifact; two kernels may share a module.
        for code in &gpu.kernels {
            for rel in std::iter::once(&code.ptx_file).chain(&code.cubin_file) {
                inside(&rank_dir, rel, &manifest_path)?;
                if !gpu_code.iter().any(|(path, _)| path == rel) {
                    gpu_code.push((rel.clone(), take(&format!("{rank_prefix}{rel}"), &mut contents)?));
                }
            }
        }
    }
    if program.target != manifest.target {
        let message = format!("target {} differs from the manifest's {}", program.target, manifest.target);
        return Err(ArtifactError::InvalidProgram { path: program_path, message });
    }
    check_program(&program, weights.len() as u64)
        .map_err(|message| ArtifactError::InvalidProgram { path: program_path.clone(), message })?;
    if program.target == "cpu" {
        // The CPU executor allocates the arena on the host when it binds: a size from the file
        // is checked against the memory budget before any memory or code is mapped.
        let limit = tessera_ir::budget::max_memory();
        if program.arena_bytes > limit {
            return Err(ArtifactError::ArenaBudget { path: program_path, bytes: program.arena_bytes, limit });
        }
    }
    if let (Some((path, object)), "cpu") = (&kernels_object, program.target.as_str()) {
        check_kernel_table(object, &program.kernel_signatures)
            .map_err(|message| ArtifactError::Kernels { path: path.clone(), message })?;
    }
    if let Some(gpu) = &program.gpu {
        for code in &gpu.kernels {
            let ptx = gpu_code.iter().find(|(path, _)| *path == code.ptx_file).map_or(&[][..], |(_, b)| b.as_slice());
            super::ptx::check_kernel_entries(ptx, code, &program)
                .map_err(|message| ArtifactError::Kernels { path: rank_dir.join(&code.ptx_file), message })?;
            // The executor prefers the cubin where it loads: its entries are checked as well.
            if let Some(cubin_file) = &code.cubin_file {
                let cubin = gpu_code.iter().find(|(path, _)| path == cubin_file).map_or(&[][..], |(_, b)| b.as_slice());
                super::cubin::check_kernel_entries(cubin, code, &program)
                    .map_err(|message| ArtifactError::Kernels { path: rank_dir.join(cubin_file), message })?;
            }
        }
    }
    let kernels_object = kernels_object.map(|(_, bytes)| bytes);
    Ok(Artifact { dir: dir.to_path_buf(), manifest, program, rank_dir, weights, kernels_object, gpu_code })
}

/// The signature table a CPU kernels object exports against the one the program's signatures
/// give (see [`tessera_ir::artifact::signature_table`]): equal, byte for byte.
pub fn check_kernel_table(object: &[u8], signatures: &[KernelSignature]) -> Result<(), String> {
    let exported = super::elf::exported_symbol_bytes(object, KERNEL_SIGNATURES_SYMBOL)?
        .ok_or_else(|| format!("exports no {KERNEL_SIGNATURES_SYMBOL} table: not compiled by this tessera"))?;
    let expected = signature_table(signatures);
    if exported != expected.as_bytes() {
        let exported = String::from_utf8_lossy(exported);
        return Err(format!(
            "its kernel signatures differ from the program's (it exports {:?}, the program expects {:?})",
            tessera_ir::quote::clip(&exported),
            tessera_ir::quote::clip(&expected)
        ));
    }
    Ok(())
}

/// Every kernel step against the signature of its symbol: one signature per symbol, and the
/// step's inputs and outputs as many as the kernel's arguments, each a buffer of the storage and
/// shape the kernel was compiled for (a kernel indexes its argument array and each buffer
/// blindly).
fn check_kernel_signatures(p: &Program) -> Result<(), String> {
    let mut by_symbol = std::collections::HashMap::new();
    for k in &p.kernel_signatures {
        if by_symbol.insert(k.symbol.as_str(), k).is_some() {
            return Err(format!("kernel {} has two signatures", k.symbol));
        }
    }
    for (s, step) in p.steps.iter().enumerate() {
        let Step::Kernel { symbol, inputs, outputs } = step else { continue };
        let k = by_symbol.get(symbol.as_str()).ok_or_else(|| format!("step {s}: kernel {symbol} has no signature"))?;
        if (inputs.len(), outputs.len()) != (k.inputs.len(), k.outputs.len()) {
            return Err(format!(
                "step {s} calls kernel {symbol} with {} inputs and {} outputs, its signature has {} and {}",
                inputs.len(),
                outputs.len(),
                k.inputs.len(),
                k.outputs.len()
            ));
        }
        let operands = inputs.iter().chain(outputs).zip(k.inputs.iter().chain(&k.outputs));
        for (i, (&b, wanted)) in operands.enumerate() {
            let found = &p.buffers[b as usize];
            if found.storage != wanted.storage || found.shape != wanted.shape {
                return Err(format!(
                    "step {s}: argument {i} of kernel {symbol} is buffer {b} ({} {:?}), the kernel takes {} {:?}",
                    found.storage.name(),
                    found.shape,
                    wanted.storage.name(),
                    wanted.shape
                ));
            }
        }
    }
    Ok(())
}

/// [`Program::bind_steps`]: ascending step indices, no communication among them, and no other
/// step writes memory a bind step's result occupies (an executor that runs them once at bind
/// reads those results on every later run).
fn check_bind_steps(p: &Program, ranges: &[(u8, u64, u64)]) -> Result<(), String> {
    if let Some(pair) = p.bind_steps.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!("bind steps are not ascending ({} then {})", pair[0], pair[1]));
    }
    let mut is_bind_step = vec![false; p.steps.len()];
    for &s in &p.bind_steps {
        let step =
            p.steps.get(s as usize).ok_or_else(|| format!("bind step {s}, but there are {} steps", p.steps.len()))?;
        if matches!(step, Step::Library { call: LibraryCall::Collective { .. }, .. }) {
            return Err(format!("bind step {s} is a collective"));
        }
        is_bind_step[s as usize] = true;
    }
    let kept: Vec<(u8, u64, u64)> = p
        .bind_steps
        .iter()
        .flat_map(|&s| p.steps[s as usize].outputs().iter().map(|&b| ranges[b as usize]))
        .filter(|r| r.1 != r.2)
        .collect();
    let overlap = |a: (u8, u64, u64), b: (u8, u64, u64)| a.0 == b.0 && a.1 < b.2 && b.1 < a.2;
    for (s, step) in p.steps.iter().enumerate().filter(|(s, _)| !is_bind_step[*s]) {
        if step.outputs().iter().any(|&o| kept.iter().any(|&k| overlap(k, ranges[o as usize]))) {
            return Err(format!("step {s} overwrites the result of a bind step"));
        }
    }
    Ok(())
}

/// Byte range of a buffer in its region, checked against the region's size and alignment.
fn check_program(p: &Program, weights_bytes: u64) -> Result<(), String> {
    if weights_bytes != p.weights_bytes {
        return Err(format!("weights image has {weights_bytes} bytes, the program says {}", p.weights_bytes));
    }
    let mut ranges = Vec::with_capacity(p.buffers.len());
    for (i, b) in p.buffers.iter().enumerate() {
        let bytes = b
            .shape
            .iter()
            .try_fold(b.storage.element_bytes(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("buffer {i} (%{}) is too large", b.name))?;
        let (region, offset, limit) = match b.location {
            Location::Arena { offset } => (0, offset, p.arena_bytes),
            Location::Weights { offset } => (1, offset, weights_bytes),
        };
        if offset % ALIGNMENT != 0 || offset.checked_add(bytes).is_none_or(|end| end > limit) {
            return Err(format!(
                "buffer {i} (%{}) at offset {offset} with {bytes} bytes is outside its region",
                b.name
            ));
        }
        ranges.push((region, offset, offset + bytes));
    }
    let n = p.buffers.len() as u32;
    let check_ids = |ids: &[u32], what: &str| -> Result<(), String> {
        match ids.iter().find(|&&b| b >= n) {
            Some(b) => Err(format!("{what} refers to buffer {b}, but there are {n}")),
            None => Ok(()),
        }
    };
    for io in p.inputs.iter().chain(&p.outputs) {
        check_ids(&[io.buffer], &format!("input/output {}", io.name))?;
        if tessera_ir::artifact::Storage::of(io.dtype) != p.buffers[io.buffer as usize].storage {
            return Err(format!("input/output {} has dtype {} but its buffer another storage", io.name, io.dtype));
        }
    }
    for io in &p.inputs {
        if !matches!(p.buffers[io.buffer as usize].location, Location::Arena { .. }) {
            return Err(format!("input {} is not in the arena", io.name));
        }
    }
    let overlap = |a: (u8, u64, u64), b: (u8, u64, u64)| a.0 == b.0 && a.1 < b.2 && b.1 < a.2;
    for (s, step) in p.steps.iter().enumerate() {
        check_ids(step.inputs(), &format!("step {s}"))?;
        check_ids(step.outputs(), &format!("step {s}"))?;
        for (k, &o) in step.outputs().iter().enumerate() {
            let out = ranges[o as usize];
            if out.0 != 0 {
                return Err(format!("step {s} writes the read-only weights"));
            }
            let clash = step.inputs().iter().chain(&step.outputs()[..k]).any(|&x| overlap(out, ranges[x as usize]));
            if clash && out.1 != out.2 {
                return Err(format!("step {s} writes memory it also reads or writes elsewhere"));
            }
        }
        let (n_in, n_out) = (step.inputs().len(), step.outputs().len());
        let arity_ok = match step {
            Step::Kernel { symbol, .. } => {
                let c_ident = symbol.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && symbol.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !c_ident {
                    return Err(format!("step {s}: kernel symbol '{symbol}' is not a C identifier"));
                }
                n_out >= 1
            }
            Step::Library { call, .. } => match call {
                LibraryCall::MatMul
                | LibraryCall::MatMulTransposedB
                | LibraryCall::IntegerMatMul { .. }
                | LibraryCall::Gather { .. }
                | LibraryCall::Conv2d { .. } => n_in == 2 && n_out == 1,
                LibraryCall::Transpose { .. }
                | LibraryCall::Slice { .. }
                | LibraryCall::Pool2d { .. }
                | LibraryCall::WinogradInput { .. }
                | LibraryCall::WinogradWeight
                | LibraryCall::WinogradOutput => n_in == 1 && n_out == 1,
                LibraryCall::Split { .. } => n_in == 1 && n_out >= 1,
                LibraryCall::Recurrent { kind, .. } => {
                    (n_in == kind.required_operands() || n_in == kind.required_operands() + 1)
                        && n_out == kind.num_results()
                }
                LibraryCall::Concat { .. } => n_in >= 1 && n_out == 1,
                LibraryCall::Collective { op } => {
                    let (operands, results) = tessera_ir::ops::collective::Collective::signature(op.mnemonic())
                        .unwrap_or((usize::MAX, usize::MAX));
                    n_in == operands && n_out == results
                }
                LibraryCall::CrossEntropy => n_in == 2 && n_out == 1,
                LibraryCall::Scatter { .. } => n_in == 3 && n_out == 1,
                LibraryCall::Reference { .. } => n_out >= 1,
                LibraryCall::WithEpilogue { gemm, epilogue } => {
                    if let Err(message) = epilogue.check() {
                        return Err(format!("step {s}: {message}"));
                    }
                    matches!(**gemm, LibraryCall::MatMul | LibraryCall::MatMulTransposedB | LibraryCall::Conv2d { .. })
                        && n_in == 2 + epilogue.operands.len()
                        && n_out == 1
                }
            },
        };
        if !arity_ok {
            return Err(format!("step {s} has {n_in} inputs and {n_out} outputs, wrong for its kind"));
        }
    }
    check_bind_steps(p, &ranges)?;
    check_kernel_signatures(p)?;
    check_bindings(p)?;
    if let Some(gpu) = &p.gpu {
        check_gpu(p, gpu)?;
    } else if p.steps.iter().any(|s| matches!(s, Step::Kernel { .. })) && p.kernels_file.is_none() {
        return Err("kernel steps but no kernels file".into());
    }
    Ok(())
}

/// The program's data flow and interface: input and output names are unique; the bytes of every
/// buffer a step reads, and of every program output, are a weight, a program input or written
/// by an earlier step (no step reads uninitialized arena memory, no output is garbage); a kernel symbol is
/// called with one arity throughout (its arguments are a pointer array it indexes blindly).
fn check_bindings(p: &Program) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for io in &p.inputs {
        if !names.insert(("input", io.name.as_str())) {
            return Err(format!("input {} is bound twice", io.name));
        }
    }
    for io in &p.outputs {
        if !names.insert(("output", io.name.as_str())) {
            return Err(format!("output {} is bound twice", io.name));
        }
    }
    // Buffers alias (a reshape is a view of its operand's bytes), so "written" is tracked by
    // arena byte range: a read is defined when one written range covers it.
    let range = |b: u32| -> Option<(u64, u64)> {
        let desc = &p.buffers[b as usize];
        match desc.location {
            Location::Arena { offset } => Some((offset, offset + desc.bytes())),
            Location::Weights { .. } => None,
        }
    };
    let mut written: Vec<(u64, u64)> = p.inputs.iter().filter_map(|io| range(io.buffer)).collect();
    let is_defined = |written: &[(u64, u64)], b: u32| match range(b) {
        None => true,
        Some((start, end)) => start == end || written.iter().any(|&(s, e)| s <= start && end <= e),
    };
    let mut arity: std::collections::HashMap<&str, (usize, usize)> = std::collections::HashMap::new();
    for (s, step) in p.steps.iter().enumerate() {
        if let Some(&b) = step.inputs().iter().find(|&&b| !is_defined(&written, b)) {
            let name = &p.buffers[b as usize].name;
            return Err(format!("step {s} reads buffer {b} (%{name}) before any step writes it"));
        }
        written.extend(step.outputs().iter().filter_map(|&o| range(o)));
        if let Step::Kernel { symbol, inputs, outputs } = step {
            let this = (inputs.len(), outputs.len());
            let first = *arity.entry(symbol.as_str()).or_insert(this);
            if first != this {
                return Err(format!(
                    "step {s} calls kernel {symbol} with {} inputs and {} outputs, another step with {} and {}",
                    this.0, this.1, first.0, first.1
                ));
            }
        }
    }
    if let Some(io) = p.outputs.iter().find(|io| !is_defined(&written, io.buffer)) {
        return Err(format!("output {} is never written", io.name));
    }
    Ok(())
}

/// The GPU section against the program: code for every kernel step, and GEMM plans that name
/// matmul steps in order and stay inside their buffers.
fn check_gpu(p: &Program, gpu: &GpuProgram) -> Result<(), String> {
    for (s, step) in p.steps.iter().enumerate() {
        if let Step::Kernel { symbol, .. } = step {
            let code = gpu.kernels.iter().find(|k| k.symbol == *symbol);
            let code = code.ok_or_else(|| format!("step {s}: kernel {symbol} has no GPU code"))?;
            if code.launches.iter().any(|l| l.grid.contains(&0) || l.block.contains(&0)) {
                return Err(format!("kernel {symbol}: a launch with an empty grid or block"));
            }
            let scratch_end = code.temporaries.iter().map(|t| t.scratch_offset.checked_add(t.bytes)).max().flatten();
            if scratch_end.is_some_and(|end| end > gpu.scratch_bytes)
                || (scratch_end.is_none() && !code.temporaries.is_empty())
            {
                return Err(format!("kernel {symbol}: temporaries outside the scratch region"));
            }
        }
    }
    let mut previous = None;
    for g in &gpu.gemms {
        let s = g.step as usize;
        let is_matmul = matches!(
            p.steps.get(s),
            Some(Step::Library { call: LibraryCall::MatMul | LibraryCall::MatMulTransposedB, .. })
        );
        if !is_matmul || previous.is_some_and(|prev| prev >= s) {
            return Err(format!("GEMM plan for step {s}, which is not the next matmul step"));
        }
        previous = Some(s);
        let step = &p.steps[s];
        let (&[a, b], &[c]) = (step.inputs(), step.outputs()) else {
            return Err(format!("step {s}: a matmul takes two inputs and one output"));
        };
        let elements = |x: u32| p.buffers[x as usize].elements();
        let (m, n, k) = (u64::from(g.m), u64::from(g.n), u64::from(g.k));
        // The last element each operand's matrices touch (column-major, with leading dimensions).
        let extent =
            |rows: u64, cols: u64, ld: u32| if rows == 0 || cols == 0 { 0 } else { (cols - 1) * u64::from(ld) + rows };
        let (b_rows, b_cols) = if g.trans_b { (k, m) } else { (m, k) };
        let (a_rows, a_cols) = if g.trans_a { (n, k) } else { (k, n) };
        for call in &g.calls {
            let last = |offset: u64, stride: u64, matrix: u64| {
                offset.checked_add(stride.checked_mul(u64::from(call.batch.saturating_sub(1)))?)?.checked_add(matrix)
            };
            let fits = |end: Option<u64>, buffer: u32| end.is_some_and(|e| e <= elements(buffer));
            if !(fits(last(call.offset_b, call.stride_b, extent(b_rows, b_cols, g.ld_b)), b)
                && fits(last(call.offset_a, call.stride_a, extent(a_rows, a_cols, g.ld_a)), a)
                && fits(last(call.offset_c, call.stride_c, extent(m, n, g.ld_c)), c))
            {
                return Err(format!("step {s}: the GEMM plan reaches outside its buffers"));
            }
        }
    }
    Ok(())
}
