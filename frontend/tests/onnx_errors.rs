//! Bad ONNX input is an error naming what is wrong (node and op, tensor, opset), never a panic:
//! truncated and random bytes, missing fields, unsupported opsets and ops, inconsistent
//! initializers, missing external data, and a proptest that mutates a real model's bytes.

mod onnx_support;

use onnx_support::{attr_ints, f32_raw, f32_value, i64_typed, mlp_model, model, node, value, D};
use proptest::prelude::*;
use prost::Message;
use tessera_frontend::onnx::proto::tensor_proto::{DataLocation, DataType};
use tessera_frontend::onnx::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use tessera_frontend::onnx::{import_bytes, import_model, import_proto, ImportOptions, OnnxError};

/// The import error's message; the import must fail.
fn error_of(m: &ModelProto) -> String {
    match import_proto(m, None, &ImportOptions::default()) {
        Ok(_) => panic!("the import unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

fn bytes_error(bytes: &[u8]) -> OnnxError {
    match import_bytes(bytes, None) {
        Ok(_) => panic!("the import unexpectedly succeeded"),
        Err(e) => e,
    }
}

#[test]
fn truncated_model_is_a_decode_error() {
    let bytes = mlp_model().encode_to_vec();
    let e = bytes_error(&bytes[..bytes.len() / 2]);
    assert!(matches!(e, OnnxError::Decode(_)), "{e}");
    assert!(e.to_string().starts_with("not an ONNX model: "), "{e}");
}

#[test]
fn random_bytes_are_an_error() {
    // A fixed xorshift stream: arbitrary bytes, reproducible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let e = bytes_error(&bytes);
    assert!(!e.is_unsupported(), "{e}");
}

#[test]
fn empty_file_and_missing_graph_are_reported() {
    assert_eq!(bytes_error(&[]).to_string(), "invalid model: the model imports no opset");
    let m = ModelProto {
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        ..ModelProto::default()
    };
    assert_eq!(error_of(&m), "invalid model: the model has no graph");
}

#[test]
fn wrong_opset_names_the_opset() {
    let mut m = mlp_model();
    m.opset_import[0].version = Some(0);
    assert_eq!(error_of(&m), "model uses ONNX opset 0; tessera imports opsets 1 to 28");
    m.opset_import[0].version = Some(29);
    assert_eq!(error_of(&m), "model uses ONNX opset 29; tessera imports opsets 1 to 28");
}

#[test]
fn old_opsets_import_unchanged_ops_and_name_the_others() {
    let mut m = mlp_model();
    m.opset_import[0].version = Some(9);
    assert!(
        import_proto(&m, None, &ImportOptions::default()).is_ok(),
        "an MLP of ops unchanged since opset 7 imports at opset 9"
    );
    m.opset_import[0].version = Some(5);
    let err = error_of(&m);
    assert!(
        err.contains("at opset 5 is not imported (before opset 7 only Not, Identity, Shape and Transpose are)"),
        "{err}"
    );
}

#[test]
fn unknown_and_subgraph_ops_are_named() {
    let one_node = |op: &str, name: &str| {
        model(
            vec![node(op, name, &["x"], &["y"], vec![])],
            vec![f32_value("x", &[D::N(2)])],
            vec![f32_value("y", &[D::N(2)])],
            vec![],
            17,
        )
    };
    assert_eq!(error_of(&one_node("FooBar", "weird_0")), "node 'weird_0' (FooBar): unsupported op");
    // If, Loop and Scan import (as tsr.if and tsr.loop), so one without its body is malformed,
    // not unsupported.
    assert_eq!(error_of(&one_node("If", "If_3")), "node 'If_3' (If): missing required graph attribute 'then_branch'");
    assert_eq!(error_of(&one_node("Scan", "Scan_3")), "node 'Scan_3' (Scan): missing required graph attribute 'body'");
    assert_eq!(error_of(&one_node("Loop", "")), "node #0 (Loop): missing required graph attribute 'body'");
    let mut custom = one_node("FusedMatMul", "fused");
    if let Some(g) = custom.graph.as_mut() {
        g.node[0].domain = Some("com.microsoft".into());
    }
    assert_eq!(error_of(&custom), "node 'fused' (com.microsoft.FusedMatMul): unsupported op");
}

#[test]
fn initializer_whose_size_disagrees_with_its_shape_is_named() {
    let mut m = mlp_model();
    let init = m.graph.as_mut().map(|g| &mut g.initializer[0]);
    let Some(w) = init else { panic!("no graph") };
    w.raw_data = Some(vec![0u8; 12].into());
    assert_eq!(error_of(&m), "tensor 'W': holds 12 bytes, but shape [3, 2] of f32 needs 24");
    let mut m = mlp_model();
    if let Some(g) = m.graph.as_mut() {
        g.initializer[1].float_data.push(1.0);
    }
    assert_eq!(error_of(&m), "tensor 'B': float_data holds 3 elements, but shape [2] needs 2");
}

#[test]
fn missing_external_data_file_is_named() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut m = mlp_model();
    let init = m.graph.as_mut().map(|g| &mut g.initializer[0]);
    let Some(w) = init else { panic!("no graph") };
    w.raw_data = None;
    w.data_location = Some(DataLocation::External as i32);
    w.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some("gone.bin".into()) }];
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).ok();
    let e = match import_model(&path) {
        Ok(_) => panic!("imported despite the missing file"),
        Err(e) => e.to_string(),
    };
    assert!(e.starts_with("tensor 'W': cannot open external data file "), "{e}");
    assert!(e.contains("gone.bin"), "{e}");
    // A location outside the model directory is refused before any file is opened.
    let init = m.graph.as_mut().map(|g| &mut g.initializer[0]);
    let Some(w) = init else { panic!("no graph") };
    w.external_data[0].value = Some("../secret.bin".into());
    std::fs::write(&path, m.encode_to_vec()).ok();
    let e = import_model(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        e,
        "tensor 'W': external data location '../secret.bin' must be a relative path inside the model directory"
    );
    // An absolute location likewise, whatever file it names.
    let init = m.graph.as_mut().map(|g| &mut g.initializer[0]);
    let Some(w) = init else { panic!("no graph") };
    w.external_data[0].value = Some("/etc/passwd".into());
    std::fs::write(&path, m.encode_to_vec()).ok();
    let e = import_model(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        e,
        "tensor 'W': external data location '/etc/passwd' must be a relative path inside the model directory"
    );
}

/// A model whose initializer `W` (3x2 f32) lives in external data at `location`.
fn external_w_model(location: &str) -> ModelProto {
    let mut m = mlp_model();
    if let Some(w) = m.graph.as_mut().map(|g| &mut g.initializer[0]) {
        w.raw_data = None;
        w.data_location = Some(DataLocation::External as i32);
        w.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some(location.into()) }];
    }
    m
}

#[test]
fn external_data_through_a_symlink_out_of_the_model_directory_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    let model_dir = tempfile::tempdir().expect("tempdir");
    let secret: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(outside.path().join("shadow"), &secret).expect("write secret");
    std::os::unix::fs::symlink(outside.path(), model_dir.path().join("etc")).expect("symlink");
    let path = model_dir.path().join("model.onnx");
    std::fs::write(&path, external_w_model("etc/shadow").encode_to_vec()).expect("write model");
    let e = import_model(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("tensor 'W': external data location 'etc/shadow' resolves through a symlink to "), "{e}");
    assert!(e.contains("outside the model directory"), "{e}");

    // A symlink that stays inside the model directory is followed: the data is the model's own.
    std::fs::create_dir(model_dir.path().join("weights")).expect("mkdir");
    std::fs::write(model_dir.path().join("weights/w.bin"), &secret).expect("write weights");
    std::os::unix::fs::symlink("weights", model_dir.path().join("alias")).expect("symlink");
    std::fs::write(&path, external_w_model("alias/w.bin").encode_to_vec()).expect("write model");
    let imported = import_model(&path);
    assert!(imported.is_ok(), "{:?}", imported.err().map(|e| e.to_string()));

    // A directory (and by the same check a FIFO or device) is not a data file.
    std::fs::write(&path, external_w_model("weights").encode_to_vec()).expect("write model");
    let e = import_model(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("tensor 'W': external data location 'weights' is not a regular file"), "{e}");
}

#[test]
fn missing_file_is_an_io_error() {
    let e = import_model(std::path::Path::new("/nonexistent/model.onnx")).err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.starts_with("/nonexistent/model.onnx: cannot read: ")));
}

#[test]
fn nodes_with_bad_inputs_or_attributes_are_named() {
    let undefined = model(
        vec![node("Relu", "relu", &["nope"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(2)])],
        vec![f32_value("y", &[D::N(2)])],
        vec![],
        17,
    );
    assert_eq!(error_of(&undefined), "node 'relu' (Relu): input 'nope' is not defined before the node");
    let mismatched = model(
        vec![node("Add", "add", &["x", "z"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(2)]), f32_value("z", &[D::N(3)])],
        vec![f32_value("y", &[D::N(2)])],
        vec![],
        17,
    );
    assert_eq!(
        error_of(&mismatched),
        "node 'add' (Add): operand shapes do not broadcast: tensor<2xf32>, tensor<3xf32>"
    );
    let wrong_kind = model(
        vec![node("Softmax", "sm", &["x"], &["y"], vec![onnx_support::attr_float("axis", 1.0)])],
        vec![f32_value("x", &[D::N(2)])],
        vec![f32_value("y", &[D::N(2)])],
        vec![],
        17,
    );
    assert_eq!(error_of(&wrong_kind), "node 'sm' (Softmax): attribute 'axis' must be int, got float");
    let no_output = model(vec![], vec![f32_value("x", &[D::N(2)])], vec![f32_value("y", &[D::N(2)])], vec![], 17);
    assert_eq!(error_of(&no_output), "graph output 'y': is not produced by any node, input or initializer");
}

#[test]
fn unsupported_types_are_named_and_classified() {
    let identity_of = |t: DataType| {
        model(
            vec![node("Identity", "id", &["x"], &["y"], vec![])],
            vec![value("x", t, &[D::N(2)])],
            vec![value("y", t, &[D::N(2)])],
            vec![],
            17,
        )
    };
    let error = |t: DataType| match import_proto(&identity_of(t), None, &ImportOptions::default()) {
        Ok(_) => panic!("{t:?} imported"),
        Err(e) => e,
    };
    let e = error(DataType::Complex64);
    assert!(e.is_unsupported());
    assert_eq!(e.to_string(), "graph input 'x': element type complex64 is not supported by tessera");
    let e = error(DataType::String);
    assert!(e.is_unsupported());
    assert_eq!(
        e.to_string(),
        "graph input 'x': string tensors are not supported: tessera computes on numeric tensors only"
    );
    assert!(import_proto(&identity_of(DataType::Uint8), None, &ImportOptions::default()).is_ok());
}

#[test]
fn absurd_generated_shapes_are_errors_not_allocations() {
    let m = model(
        vec![node("ConstantOfShape", "fill", &["shape"], &["y"], vec![])],
        vec![],
        vec![f32_value("y", &[D::N(1 << 20), D::N(1 << 20)])],
        vec![i64_typed("shape", &[2], &[1 << 20, 1 << 20])],
        17,
    );
    assert_eq!(
        error_of(&m),
        "node 'fill' (ConstantOfShape): unsupported: ConstantOfShape would need a constant of 1099511627776 \
         elements (the limit is 67108864)"
    );
    let huge = model(
        vec![node("Relu", "relu", &["x"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(1 << 41)])],
        vec![f32_value("y", &[D::N(1 << 41)])],
        vec![],
        17,
    );
    assert_eq!(
        error_of(&huge),
        "graph input 'x': dimension 0 (2199023255552) is larger than tessera's limit of 1099511627776"
    );
}

/// `Expand` to [2^20, 2^20, 3] and `Tile` by [2^30, 2^30] import (the shapes are legal) but the
/// interpreter refuses the result by name and size instead of aborting on the allocation. The
/// limit is lowered to 1 GiB so the test means the same on any machine (the other tests of this
/// binary evaluate only small tensors).
#[test]
fn huge_expand_and_tile_results_are_refused_by_the_memory_budget() {
    let expand = model(
        vec![node("Expand", "grow", &["x", "shape"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(1), D::N(1), D::N(3)])],
        vec![f32_value("y", &[D::N(1 << 20), D::N(1 << 20), D::N(3)])],
        vec![i64_typed("shape", &[3], &[1 << 20, 1 << 20, 3])],
        17,
    );
    let tile = model(
        vec![node("Tile", "tile", &["x", "repeats"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(2), D::N(2)])],
        vec![f32_value("y", &[D::N(1 << 31), D::N(1 << 31)])],
        vec![i64_typed("repeats", &[2], &[1 << 30, 1 << 30])],
        17,
    );
    tessera_ir::budget::set_max_memory(1 << 30);
    for (m, shape, expected) in [
        (expand, vec![1, 1, 3], "needs 24.0 TiB (3298534883328 elements), more than the memory limit of "),
        (tile, vec![2, 2], "needs 32.0 GiB (4294967296 elements), more than the memory limit of 1.0 GiB"),
    ] {
        let g = match import_proto(&m, None, &ImportOptions::default()) {
            Ok(g) => g,
            Err(e) => panic!("imports: {e}"),
        };
        let x = tessera_ir::tensor::Tensor::zeros(tessera_ir::dtype::DType::F32, shape);
        let e = tessera_runtime::interpreter::run(&g, &[("x".to_string(), x)]).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains(expected), "{e}");
    }
}

/// `Tile` of a [1024, 1024] input by [2^30, 2^30] has 2^80 elements: the element count
/// overflowed u64 and the import failed with a wrong "element counts differ".
#[test]
fn a_tile_past_2_64_elements_names_the_overflow() {
    let tile = model(
        vec![node("Tile", "tile", &["x", "repeats"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(1024), D::N(1024)])],
        vec![f32_value("y", &[D::N(1 << 40), D::N(1 << 40)])],
        vec![i64_typed("repeats", &[2], &[1 << 30, 1 << 30])],
        17,
    );
    let err = error_of(&tile);
    assert!(err.starts_with("node 'tile' (Tile)") && err.ends_with("has more than 2^64 elements"), "{err}");
    assert!(!err.contains("element counts differ"), "{err}");
}

/// Two nodes writing one output name: the second would have silently replaced the first.
#[test]
fn a_value_defined_twice_is_an_error() {
    let twice = model(
        vec![node("Relu", "first", &["x"], &["y"], vec![]), node("Neg", "second", &["x"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(2)])],
        vec![f32_value("y", &[D::N(2)])],
        vec![],
        17,
    );
    assert_eq!(
        error_of(&twice),
        "node 'second' (Neg): output 'y' is already defined (by another node, a graph input or an initializer); \
         ONNX names each value once"
    );
    // A node may not redefine a graph input either; a huge name is quoted in part.
    let long = "x".repeat(100_000);
    let shadow = model(
        vec![node("Relu", "relu", &[long.as_str()], &[long.as_str()], vec![])],
        vec![f32_value(&long, &[D::N(2)])],
        vec![f32_value(&long, &[D::N(2)])],
        vec![],
        17,
    );
    let e = error_of(&shadow);
    assert!(e.len() < 400, "the message quotes the whole name: {} bytes", e.len());
    assert!(e.contains(&format!("output '{}... (100000 bytes)' is already defined", "x".repeat(200))), "{e}");
}

/// A slightly larger real model for mutation: conv, reshape with a constant shape, gemm, softmax.
fn mutation_model() -> Vec<u8> {
    let m = model(
        vec![
            node("Conv", "conv", &["x", "w"], &["c"], vec![onnx_support::attr_ints("pads", &[1, 1, 1, 1])]),
            node("Reshape", "flat", &["c", "shape"], &["f"], vec![]),
            node("Gemm", "fc", &["f", "fw"], &["g"], vec![onnx_support::attr_int("transB", 1)]),
            node("Softmax", "sm", &["g"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::P("n"), D::N(1), D::N(4), D::N(4)])],
        vec![f32_value("y", &[D::P("n"), D::N(3)])],
        vec![
            f32_raw("w", &[2, 1, 3, 3], &[0.5; 18]),
            i64_typed("shape", &[2], &[0, -1]),
            f32_raw("fw", &[3, 32], &[0.25; 96]),
        ],
        17,
    );
    m.encode_to_vec()
}

#[test]
fn the_mutation_model_imports() {
    let g = import_bytes(&mutation_model(), None).map_err(|e| e.to_string());
    assert!(g.is_ok(), "{g:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Flipped, overwritten, inserted and removed bytes: any result but a panic is fine.
    #[test]
    fn mutated_model_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = mutation_model();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
            match kind {
                0 if !bytes.is_empty() => bytes[i] ^= byte | 1,
                1 if !bytes.is_empty() => bytes[i] = byte,
                2 => bytes.insert(i, byte),
                _ if !bytes.is_empty() => { bytes.remove(i); }
                _ => {}
            }
        }
        if let Some(cut) = cut {
            let n = cut.index(bytes.len() + 1);
            bytes.truncate(n);
        }
        let _ = import_bytes(&bytes, None);
    }
}

/// Integers that tend to break shape arithmetic.
fn nasty_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        Just(1i64 << 40),
        Just(1i64 << 62),
        -5i64..40,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Well-formed protobuf with hostile values: attributes, dims, shape constants and opsets set
    /// to extremes. Errors are fine; panics (overflow, huge allocations) are not.
    #[test]
    fn hostile_field_values_never_panic(
        attr_edits in proptest::collection::vec((0usize..4, prop_oneof![Just("pads"), Just("strides"), Just("dilations"), Just("group"), Just("axis"), Just("transB"), Just("kernel_shape")], proptest::collection::vec(nasty_int(), 0..5)), 0..4),
        dim_edits in proptest::collection::vec((0usize..3, 0usize..4, nasty_int()), 0..3),
        shape_values in proptest::option::of(proptest::collection::vec(nasty_int(), 0..4)),
        input_dims in proptest::option::of(proptest::collection::vec(nasty_int(), 0..5)),
        opset in prop_oneof![Just(17i64), 0i64..40],
    ) {
        let Ok(mut m) = ModelProto::decode(mutation_model().as_slice()) else { return Ok(()) };
        m.opset_import[0].version = Some(opset);
        let Some(g) = m.graph.as_mut() else { return Ok(()) };
        for (n, name, values) in attr_edits {
            let node = &mut g.node[n % 4];
            node.attribute.retain(|a| a.name() != name);
            let attr = match values.as_slice() {
                [single] if name == "group" || name == "axis" || name == "transB" => onnx_support::attr_int(name, *single),
                _ => onnx_support::attr_ints(name, &values),
            };
            node.attribute.push(attr);
        }
        for (t, d, v) in dim_edits {
            let init = &mut g.initializer[t % 3];
            if !init.dims.is_empty() {
                let i = d % init.dims.len();
                init.dims[i] = v;
            }
        }
        if let Some(values) = shape_values {
            g.initializer[1] = i64_typed("shape", &[values.len() as i64], &values);
        }
        if let Some(dims) = input_dims {
            let d: Vec<D> = dims.into_iter().map(D::N).collect();
            g.input[0] = f32_value("x", &d);
        }
        let _ = import_proto(&m, None, &ImportOptions::default());
    }
}

/// A ConvTranspose whose attributes push its sizes past i64 is refused by name, and an
/// `output_shape` with fewer entries than spatial dimensions falls back to the computed extent
/// (both panicked with arithmetic overflow; the second was found by the `onnx_import` fuzz target).
#[test]
fn conv_transpose_sizes_never_overflow() {
    let conv_transpose = |attrs| {
        model(
            vec![node("ConvTranspose", "up", &["x", "w"], &["y"], attrs)],
            vec![
                f32_value("x", &[D::N(1), D::N(1), D::N(3), D::N(3)]),
                f32_value("w", &[D::N(1), D::N(2), D::N(3), D::N(3)]),
            ],
            vec![f32_value("y", &[D::N(1), D::N(2), D::P("h"), D::P("w")])],
            vec![],
            22,
        )
    };
    let huge = conv_transpose(vec![attr_ints("output_padding", &[i64::MAX, 0]), attr_ints("output_shape", &[5, 5])]);
    assert_eq!(
        error_of(&huge),
        "node 'up' (ConvTranspose): ConvTranspose: the output extent of spatial dimension 0 overflows"
    );
    let short = conv_transpose(vec![attr_ints("output_shape", &[7]), attr_ints("strides", &[3, 2])]);
    assert!(import_proto(&short, None, &ImportOptions::default()).is_ok());
}

/// Shape arithmetic on a symbolic dimension that overflows i64 (`Shape(x) * 2^62 * 2^62`, and
/// `Shape(x) + (2^63 - 1) + (2^63 - 1)`) is an import error naming the node and the expression,
/// not a wrapped size.
#[test]
fn overflowing_symbolic_shape_arithmetic_is_a_located_error() {
    for (op, big, expected) in [
        ("Mul", 1i64 << 62, "integer overflow computing (4611686018427387904 * n) * (4611686018427387904)"),
        ("Add", i64::MAX, "integer overflow computing n + 9223372036854775807 + 9223372036854775807"),
    ] {
        let m = model(
            vec![
                node("Shape", "shape", &["x"], &["s"], vec![]),
                node(op, "once", &["s", "big"], &["s2"], vec![]),
                node(op, "twice", &["s2", "big"], &["s3"], vec![]),
                node("ConstantOfShape", "fill", &["s3"], &["y"], vec![]),
            ],
            vec![f32_value("x", &[D::P("n")])],
            vec![f32_value("y", &[D::P("m")])],
            vec![i64_typed("big", &[1], &[big])],
            17,
        );
        let e = error_of(&m);
        assert!(e.starts_with(&format!("node 'twice' ({op}): ")) && e.contains(expected), "{e}");
    }
}

/// `ConstantOfShape` and `Expand` to `[n, 2^20, 2^20]` with `n` symbolic import (the size is
/// unknown until a run), and a run at n = 3 is refused by the memory budget, naming the result
/// and its size (3 * 2^40 elements), instead of attempting the allocation.
#[test]
fn terabyte_fills_sized_by_a_symbolic_input_are_refused_at_run_time() {
    let shape = || node("Shape", "shape", &["x"], &["s"], vec![]);
    let concat = node("Concat", "sizes", &["s", "tail"], &["sizes"], vec![onnx_support::attr_int("axis", 0)]);
    let fill = model(
        vec![shape(), concat.clone(), node("ConstantOfShape", "fill", &["sizes"], &["y"], vec![])],
        vec![f32_value("x", &[D::P("n")])],
        vec![f32_value("y", &[D::P("n"), D::N(1 << 20), D::N(1 << 20)])],
        vec![i64_typed("tail", &[2], &[1 << 20, 1 << 20])],
        17,
    );
    let expand = model(
        vec![
            shape(),
            node("Concat", "sizes", &["tail", "s"], &["sizes"], vec![onnx_support::attr_int("axis", 0)]),
            node("Expand", "grow", &["x", "sizes"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::P("n")])],
        vec![f32_value("y", &[D::N(1 << 20), D::N(1 << 20), D::P("n")])],
        vec![i64_typed("tail", &[2], &[1 << 20, 1 << 20])],
        17,
    );
    tessera_ir::budget::set_max_memory(1 << 30);
    for (label, m) in [("ConstantOfShape", fill), ("Expand", expand)] {
        let g = import_proto(&m, None, &ImportOptions::default()).unwrap_or_else(|e| panic!("{label} imports: {e}"));
        let x = tessera_ir::tensor::Tensor::zeros(tessera_ir::dtype::DType::F32, vec![3]);
        let e = tessera_runtime::interpreter::run(&g, &[("x".to_string(), x)]).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(
            e.contains("needs 24.0 TiB (3298534883328 elements), more than the memory limit of 1.0 GiB"),
            "{label}: {e}"
        );
    }
}
