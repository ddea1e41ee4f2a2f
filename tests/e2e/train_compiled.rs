//! `tessera train` on the compiled step (the default executor): the same losses as the
//! reference interpreter, checkpoints that resume on either executor, and the steps that still
//! fall back to the interpreter inside the artifact (none), pinned; the carried state trades
//! arena ranges with the step's outputs instead of being copied.

use crate::support::tessera;
use std::path::Path;
use tessera::train::{self, compiled::compiled_trainer, data::ByteCorpus, OptimizerKind, TrainConfig, Trainer};
use tessera_runtime::step::StepExecutor;

/// Real English text on every Debian machine (base-files).
const CORPUS: &str = "/usr/share/common-licenses/GPL-3";

/// The benchmark's model (issue 16: two layers, f32, untied head, no dropout). With dropout
/// (0.1) the losses also agree to a few 1e-6 for most steps, but now and then one step's loss
/// differs by 1e-5 to 3e-4 and the next ones agree again (seen at steps 19-20 and 26 of three
/// seeds): f32 against f64 rounding on a batch whose loss is sensitive, not a drift.
const MODEL: &str = "gpt:layers=2,hidden=64,heads=4,seq=64,vocab=256,dtype=f32,tied=false,dropout=0";

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-30)
}

#[test]
fn compiled_losses_equal_the_interpreters_over_20_steps() {
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let config =
        TrainConfig { model: MODEL.into(), optimizer: OptimizerKind::AdamW, lr: 3e-3, seed: 11, micro_batches: 1 };
    let model = train::load_model(MODEL, 4, None).expect("model");
    let mut reference = Trainer::on_interpreter(model.clone(), config.clone(), corpus.clone()).expect("interpreter");
    let (mut compiled, _) = compiled_trainer(model, config, corpus).expect("compiled");
    // Every step is compiled: the loss's cross-entropy and the embedding gradients' scatters
    // are library calls, not the interpreter.
    assert!(compiled.executor().reference_ops().is_empty(), "{:?}", compiled.executor().reference_ops());
    assert!(compiled.executor().describe().contains("no reference steps"));
    let mut worst: f64 = 0.0;
    let mut losses = Vec::new();
    for _ in 0..20 {
        let want = reference.train_step().expect("interpreter step").loss;
        let got = compiled.train_step().expect("compiled step").loss;
        worst = worst.max(relative(got, want));
        losses.push(want);
    }
    assert!(worst < 1e-5, "compiled losses differ from the interpreter's by {worst:e} (relative)");
    // The run learns, so equal losses mean equal updates, not two runs standing still.
    assert!(losses[19] < losses[0] - 0.5, "losses {losses:?}");
    // The weights read back from the arena are the interpreter's too, but for the few elements
    // whose AdamW update follows the sign of a gradient that is rounding noise (about lr per
    // step either way, in either precision).
    let (got, want) = (compiled.state().expect("state").clone(), reference.state().expect("state").clone());
    assert_eq!((got.step, got.data_position, got.rng), (want.step, want.data_position, want.rng));
    let (mut close, mut total) = (0usize, 0usize);
    for (g, w) in got.params.iter().chain(&got.optimizer_state).zip(want.params.iter().chain(&want.optimizer_state)) {
        let w = w.to_f64_vec();
        let scale = w.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        close += g.to_f64_vec().iter().zip(&w).filter(|(x, y)| (*x - *y).abs() <= 1e-4 * scale).count();
        total += w.len();
    }
    assert!(close as f64 >= 0.99 * total as f64, "only {close} of {total} state elements agree");
}

fn json_losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            (v["step"].as_u64().expect("step"), v["loss"].as_f64().expect("loss"))
        })
        .collect()
}

#[test]
fn a_checkpoint_of_one_executor_resumes_on_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32";
    let run = |extra: &[&str]| {
        let mut args = vec!["train", model, "--data", CORPUS, "--batch", "2", "--format", "json", "--seed", "5"];
        args.extend(extra);
        let out = tessera(dir.path(), &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        json_losses(&out.stdout)
    };
    let compiled = run(&["--steps", "6"]);
    let reference = run(&["--steps", "6", "--executor", "reference"]);
    for (c, r) in compiled.iter().zip(&reference) {
        assert!(relative(c.1, r.1) < 1e-5, "{compiled:?} vs {reference:?}");
    }
    // Three steps on each executor, then three on the other.
    let save = |executor: &str, ckpt: &str| {
        run(&["--steps", "3", "--executor", executor, "--checkpoint-dir", ckpt, "--checkpoint-every", "3"])
    };
    save("reference", "from-reference");
    save("compiled", "from-compiled");
    let on_compiled = run(&["--steps", "6", "--resume", "from-reference"]);
    let on_reference = run(&["--steps", "6", "--resume", "from-compiled", "--executor", "reference"]);
    for resumed in [&on_compiled, &on_reference] {
        assert_eq!(resumed.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 5, 6]);
        for (got, want) in resumed.iter().zip(&compiled[3..]) {
            assert!(relative(got.1, want.1) < 1e-5, "resumed {resumed:?}, uninterrupted {compiled:?}");
        }
    }
    // A compiled run resumed from its own checkpoint is the uninterrupted run, bit for bit.
    let again = run(&["--steps", "6", "--resume", "from-compiled"]);
    assert_eq!(again[..], compiled[3..]);
}

#[test]
fn the_start_line_names_the_executor_and_profile_needs_the_compiled_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32";
    let args = ["train", model, "--steps", "2", "--data", CORPUS, "--batch", "2"];
    let out = tessera(dir.path(), &[&args[..], &["--profile"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("on compiled CPU artifact, 1 process, no reference steps"), "{}", out.stdout);
    assert!(out.stdout.contains("compiled the step in"), "{}", out.stdout);
    assert!(out.stderr.contains("profile of the compiled step, summed over 2 steps"), "{}", out.stderr);
    assert!(out.stderr.contains("carried outputs"), "{}", out.stderr);
    let out = tessera(dir.path(), &[&args[..], &["--executor", "reference"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("on reference interpreter, 1 process"), "{}", out.stdout);
    let out = tessera(dir.path(), &[&args[..], &["--executor", "reference", "--profile"]].concat());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--profile times the compiled step"), "{}", out.stderr);
}

#[test]
fn carried_state_is_checked_when_bound() {
    use tessera_runtime::executor::{cpu::CpuExecutor, load};
    use tessera_runtime::step::{CarriedValue, CompiledExecutor, StepError};
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32,dropout=0";
    let out = tessera(dir.path(), &["compile", model, "--train", "--batch", "2", "-o", "art"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let artifact = || load::load(&dir.path().join("art")).expect("artifact");
    let step = train::build_step(
        &train::load_model(model, 2, None).expect("model"),
        &TrainConfig { model: model.into(), optimizer: OptimizerKind::AdamW, lr: 3e-3, seed: 0, micro_batches: 1 },
    )
    .expect("step");
    let carried = train::carried_state(&step).expect("carried");
    let state: Vec<(String, tessera_ir::tensor::Tensor)> = {
        let s = train::init_state(&step, 0);
        carried.iter().map(|c| c.input.clone()).zip(s.params.into_iter().chain(s.optimizer_state)).collect()
    };
    let error = |r: Result<CompiledExecutor, StepError>| r.err().map(|e| e.to_string()).unwrap_or_default();
    // A tensor missing from the state, and one output carried onto an input of another shape.
    let missing = error(CompiledExecutor::new(artifact(), carried.clone(), &state[1..]));
    assert!(missing.contains(&format!("{} tensors given, {} carried", state.len() - 1, state.len())), "{missing}");
    let mut crossed = carried.clone();
    let (first, last) = (crossed[0].output.clone(), crossed[crossed.len() - 1].output.clone());
    crossed[0].output = last;
    crossed.last_mut().expect("carried").output = first;
    let crossed = error(CompiledExecutor::new(artifact(), crossed, &state));
    assert!(crossed.contains("cannot carry output"), "{crossed}");
    // Only a resident input can take a carried output.
    let executor = CpuExecutor::new(artifact()).expect("executor");
    let bound = executor.bind::<tessera_ir::tensor::Tensor>(&[]).expect("bind");
    let CarriedValue { input, output } = &carried[0];
    let refused = bound.carry(&[(output.clone(), input.clone())]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("only a resident input can carry an output"), "{refused}");
    let unknown = bound.carry(&[("nothing".into(), input.clone())]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(unknown.contains("no output of this name"), "{unknown}");
}

/// Compiles `g` for the CPU into `dir` and loads it.
fn compiled(g: &tessera_ir::graph::Graph, dir: &Path) -> tessera_runtime::executor::cpu::CpuExecutor {
    use tessera_codegen::artifact::{compile, write_artifact, CompileOptions};
    let options = CompileOptions::cpu();
    let files = compile(g, g.name.as_bytes(), &options).expect("compile").files;
    write_artifact(&dir.join(&g.name), &files).expect("write");
    let artifact = tessera_runtime::executor::load::load(&dir.join(&g.name)).expect("load");
    tessera_runtime::executor::cpu::CpuExecutor::new(artifact).expect("executor")
}

/// The library calls of a program by name, and how many steps are left to the interpreter.
fn library_calls(p: &tessera_ir::artifact::Program) -> (Vec<&'static str>, usize) {
    use tessera_ir::artifact::{LibraryCall, Step};
    let calls: Vec<&'static str> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Library { call, .. } => Some(call.name()),
            Step::Kernel { .. } => None,
        })
        .collect();
    let reference =
        p.steps.iter().filter(|s| matches!(s, Step::Library { call: LibraryCall::Reference { .. }, .. })).count();
    (calls, reference)
}

/// An embedding gradient's scatter-add, where ids repeat (rows summed into one table row in
/// update order), and a cross-entropy over the logits of the same rows: compiled as library
/// calls, they give the interpreter's values bit for bit.
#[test]
fn scatter_add_with_repeated_ids_and_cross_entropy_equal_the_interpreter_bit_for_bit() {
    use tessera_ir::dtype::DType;
    use tessera_ir::graph::{Graph, InputRole};
    use tessera_ir::ops::{indexing::ScatterReduction, Op};
    use tessera_ir::random::{uniform_tensor, SplitMix64};
    use tessera_ir::tensor::Tensor;
    use tessera_ir::types::TensorType;
    let (rows, width, tokens, classes) = (11, 7, 9, 37);
    let mut g = Graph::new("scatter_add");
    let table = g.add_input("table", TensorType::of_static(DType::F32, &[rows, width]), InputRole::Parameter);
    let ids = g.add_input("ids", TensorType::of_static(DType::I64, &[tokens, width]), InputRole::Activation);
    let grads = g.add_input("grads", TensorType::of_static(DType::F32, &[tokens, width]), InputRole::Activation);
    let logits = g.add_input("logits", TensorType::of_static(DType::F32, &[tokens, classes]), InputRole::Activation);
    let targets = g.add_input("targets", TensorType::of_static(DType::I64, &[tokens]), InputRole::Activation);
    let summed = g.add(Op::Scatter { axis: 0, reduction: ScatterReduction::Add }, &[table, ids, grads]).expect("op");
    let loss = g.add(Op::CrossEntropy, &[logits, targets]).expect("op");
    g.set_outputs(vec![summed, loss]);

    let dir = tempfile::tempdir().expect("tempdir");
    let executor = compiled(&g, dir.path());
    let (calls, reference) = library_calls(executor.program());
    assert_eq!((calls.as_slice(), reference), (&["scatter", "cross_entropy"][..], 0));

    // Token ids with repeats (row 3 four times, row 10 twice, one negative id for row 10),
    // each id along a whole row of the update as an embedding's gradient has it.
    let token_ids: [i64; 9] = [3, 0, 3, 10, 3, -1, 5, 3, 7];
    let id_rows: Vec<f64> = token_ids.iter().flat_map(|&k| std::iter::repeat_n(k as f64, width as usize)).collect();
    let feeds: Vec<(String, Tensor)> = vec![
        ("table".into(), uniform_tensor(&mut SplitMix64::new(1), DType::F32, vec![rows as usize, width as usize])),
        ("ids".into(), Tensor::from_f64(DType::I64, vec![tokens as usize, width as usize], id_rows)),
        ("grads".into(), uniform_tensor(&mut SplitMix64::new(2), DType::F32, vec![tokens as usize, width as usize])),
        ("logits".into(), uniform_tensor(&mut SplitMix64::new(3), DType::F32, vec![tokens as usize, classes as usize])),
        (
            "targets".into(),
            Tensor::from_f64(DType::I64, vec![tokens as usize], vec![4.0, 0.0, 36.0, 9.0, 9.0, 1.0, 2.0, 3.0, 5.0]),
        ),
    ];
    let want = tessera_runtime::interpreter::run(&g, &feeds).expect("interpreter");
    let got = executor.run(&feeds).expect("compiled run");
    let bits = |t: &Tensor| t.to_f64_vec().iter().map(|&x| (x as f32).to_bits()).collect::<Vec<u32>>();
    for ((name, got), (_, want)) in got.iter().zip(&want) {
        assert_eq!(
            bits(got),
            bits(want),
            "{name}: compiled {:?}, interpreter {:?}",
            got.to_f64_vec(),
            want.to_f64_vec()
        );
    }
    // The repeated row really is a sum of several updates (not the last one written).
    let (table_in, grads_in) = (feeds[0].1.to_f64_vec(), feeds[2].1.to_f64_vec());
    let row3: f64 = table_in[3 * 7] + [0, 2, 4, 7].iter().map(|&t| grads_in[t * 7]).sum::<f64>();
    assert!((got[0].1.to_f64_vec()[3 * 7] - row3).abs() < 1e-6, "row 3 is not the sum of its four updates");
}

/// GPT steps, tied (GPT-2's layout: the token table is also the head) and untied, compile with
/// no reference step, and every carried weight and AdamW moment trades arena ranges with its
/// updated value after a step instead of being copied.
#[test]
fn a_gpt_step_has_no_reference_steps_and_carries_its_state_without_copies() {
    use tessera_runtime::executor::{cpu::CpuExecutor, load};
    for model in [
        "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32,dropout=0",
        "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32,dropout=0,tied=false",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tessera(dir.path(), &["compile", model, "--train", "--batch", "2", "-o", "art"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.lines().any(|l| l.starts_with("reference steps: 0 of ")), "{model}: {}", out.stdout);
        let artifact = load::load(&dir.path().join("art")).expect("artifact");
        let (calls, reference) = library_calls(&artifact.program);
        assert_eq!(reference, 0, "{model}: {calls:?}");
        assert_eq!(calls.iter().filter(|&&c| c == "cross_entropy").count(), 1, "{model}: {calls:?}");
        // The token and position tables' gradients.
        assert_eq!(calls.iter().filter(|&&c| c == "scatter").count(), 2, "{model}: {calls:?}");

        let step = train::build_step(
            &train::load_model(model, 2, None).expect("model"),
            &TrainConfig { model: model.into(), optimizer: OptimizerKind::AdamW, lr: 3e-3, seed: 0, micro_batches: 1 },
        )
        .expect("step");
        let carried = train::carried_state(&step).expect("carried");
        let s = train::init_state(&step, 0);
        let state: Vec<(String, tessera_ir::tensor::Tensor)> =
            carried.iter().map(|c| c.input.clone()).zip(s.params.into_iter().chain(s.optimizer_state)).collect();
        let bound = CpuExecutor::new(artifact).expect("executor").into_bound(&state).expect("bind");
        let pairs: Vec<(String, String)> = carried.iter().map(|c| (c.output.clone(), c.input.clone())).collect();
        let carry = bound.carry(&pairs).expect("carry");
        assert_eq!((carry.swapped(), carry.len()), (carried.len(), carried.len()), "{model}");
    }
}
