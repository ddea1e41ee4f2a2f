//! Import-speed benchmark: `onnx::import_model` on a generated model of 100 MB+ of float32
//! weights held in an external data file, against plain reads of the same bytes.
//!
//! Run with `cargo bench -p tessera-frontend --bench import` (BENCHMARKS.md has the numbers).
//! The model (a chain of `LAYERS` MatMuls of `WIDTH` x `WIDTH` weights) is written once into
//! Cargo's per-target scratch directory and reused while its size is right. Every measurement is
//! the median of `RUNS` runs, each in a fresh process, after one warm-up run, so all of them read
//! the files from the page cache: the benchmark times the importer, not the disk.
//!
//! Baselines measured in the same process, so ratios factor out the machine:
//! - `fs::read`: `std::fs::read` of the model and its data file (the cost of touching the bytes);
//! - `f32 -> f64`: reading the data file and widening every float to an f64 vector, the least
//!   work that builds the IR's constants (tsr tensors hold floats as f64).

use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_frontend::onnx::proto::tensor_proto::{DataLocation, DataType};
use tessera_frontend::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use tessera_frontend::onnx::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// 28 layers of 1024 x 1024 float32 weights: 117.4 MB (112 MiB) of external data.
const LAYERS: usize = 28;
const WIDTH: usize = 1024;
const RUNS: usize = 7;
const DATA_FILE: &str = "weights.bin";

fn main() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("import-bench");
    let model = dir.join("model.onnx");
    let data = dir.join(DATA_FILE);
    // A child process times one run of one measurement (see `measure`).
    if let Some(what) = std::env::args().find_map(|a| a.strip_prefix("--child=").map(str::to_string)) {
        let t = Instant::now();
        match what.as_str() {
            "read" => {
                let (m, d) = (std::fs::read(&model).expect("read model"), std::fs::read(&data).expect("read data"));
                std::hint::black_box((m.len(), d.len()));
            }
            "widen" => {
                let d = std::fs::read(&data).expect("read data");
                let floats: Vec<f64> =
                    d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect();
                std::hint::black_box(floats.len());
            }
            "import" => {
                let g = tessera_frontend::onnx::import_model(&model).expect("the generated model imports");
                std::hint::black_box(g.num_nodes());
            }
            other => panic!("unknown measurement {other}"),
        }
        println!("{}", t.elapsed().as_secs_f64());
        return;
    }

    if let Err(e) = prepare(&dir) {
        eprintln!("import bench: cannot write the model into {}: {e}", dir.display());
        std::process::exit(1);
    }
    let bytes = file_len(&model) + file_len(&data);
    let mb = bytes as f64 / 1e6;
    println!(
        "import bench: {} ({LAYERS} MatMul layers of {WIDTH}x{WIDTH} f32, {mb:.1} MB in all, {:.1} MB external)",
        model.display(),
        file_len(&data) as f64 / 1e6
    );
    let read = measure("read");
    let widen = measure("widen");
    let import = measure("import");
    println!("median of {RUNS} runs        seconds   MB/s     s per 100 MB   x fs::read");
    for (name, secs) in [("fs::read", read), ("f32 -> f64", widen), ("import_model", import)] {
        println!("{name:<24} {secs:>9.4} {:>7.0} {:>14.4} {:>12.2}", mb / secs, secs * 100.0 / mb, secs / read);
    }
}

/// The median of [`RUNS`] timings of `what`, after one warm-up run that brings the files into
/// the page cache. Each run is a fresh process timing itself, so every import starts with a cold
/// allocator, as `tessera run model.onnx` does: within one process, later runs would reuse the
/// memory earlier ones freed and skip the page faults of fresh memory, which are much of the cost.
fn measure(what: &str) -> f64 {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let run = || -> f64 {
        let out = std::process::Command::new(&exe).arg(format!("--child={what}")).output().expect("child runs");
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().unwrap_or_else(|_| panic!("{what}: child printed {text:?}"))
    };
    run();
    let mut times: Vec<f64> = (0..RUNS).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Writes `model.onnx` and its data file into `dir` unless they are there with the right size.
fn prepare(dir: &Path) -> std::io::Result<PathBuf> {
    let model_path = dir.join("model.onnx");
    let data_path = dir.join(DATA_FILE);
    let layer_bytes = WIDTH * WIDTH * 4;
    if model_path.is_file() && file_len(&data_path) == (LAYERS * layer_bytes) as u64 {
        return Ok(model_path);
    }
    std::fs::create_dir_all(dir)?;
    // Deterministic weights of a sensible size (|w| < 1 / sqrt(WIDTH)), from an LCG.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data = Vec::with_capacity(LAYERS * layer_bytes);
    for _ in 0..LAYERS * WIDTH * WIDTH {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        data.extend_from_slice(&(unit * 2.0 / (WIDTH as f32).sqrt()).to_le_bytes());
    }
    std::fs::write(&data_path, &data)?;

    let kv = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    let mut initializer = Vec::with_capacity(LAYERS);
    let mut node = Vec::with_capacity(LAYERS);
    for i in 0..LAYERS {
        initializer.push(TensorProto {
            name: Some(format!("w{i}")),
            dims: vec![WIDTH as i64, WIDTH as i64],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                kv("location", DATA_FILE.into()),
                kv("offset", (i * layer_bytes).to_string()),
                kv("length", layer_bytes.to_string()),
            ],
            ..TensorProto::default()
        });
        let input = if i == 0 { "x".to_string() } else { format!("h{i}") };
        node.push(NodeProto {
            input: vec![input, format!("w{i}")],
            output: vec![if i + 1 == LAYERS { "y".to_string() } else { format!("h{}", i + 1) }],
            name: Some(format!("matmul{i}")),
            op_type: Some("MatMul".into()),
            ..NodeProto::default()
        });
    }
    let value = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension { value: Some(dimension::Value::DimParam("batch".into())), ..Dimension::default() },
                        Dimension { value: Some(dimension::Value::DimValue(WIDTH as i64)), ..Dimension::default() },
                    ],
                }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(GraphProto {
            name: Some("matmul_stack".into()),
            node,
            initializer,
            input: vec![value("x")],
            output: vec![value("y")],
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    };
    std::fs::write(&model_path, model.encode_to_vec())?;
    Ok(model_path)
}
