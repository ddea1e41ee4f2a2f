//! Training steps partitioned over meshes: on dp, tp, pp and their combinations, in-process
//! ranks (one thread each) give the single-process trainer's losses and final weights.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tessera::train::data::ByteCorpus;
use tessera::train::distributed::{assemble, train_in_process, DistributedStep, Event};
use tessera::train::{self, OptimizerKind, TrainConfig, TrainState, Trainer};
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, Sharding};
use tessera_ir::tensor::Tensor;
use tessera_passes::cost::step::Schedule;
use tessera_passes::shard::{PipelineSchedule, ShardConfig};
use tessera_runtime::spmd::{run_spmd, RankProgram, SpmdConfig};

const CORPUS: &str = "/usr/share/common-licenses/GPL-3";
const STEPS: u64 = 5;

fn config(model: &str, optimizer: OptimizerKind, micro_batches: usize) -> TrainConfig {
    let lr = match optimizer {
        OptimizerKind::AdamW => 3e-3,
        OptimizerKind::Sgd => 0.1,
    };
    TrainConfig { model: model.to_string(), optimizer, lr, seed: 7, micro_batches }
}

/// The single-process losses and final state.
fn single(model: &str, batch: u64, cfg: &TrainConfig, corpus: &ByteCorpus) -> (Vec<f64>, TrainState) {
    let m = train::load_model(model, batch, None).expect("model");
    let mut trainer = Trainer::on_interpreter(m, cfg.clone(), corpus.clone()).expect("trainer");
    let losses = (0..STEPS).map(|_| trainer.train_step().expect("step").loss).collect();
    (losses, trainer.state().expect("state").clone())
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-30)
}

/// Trains `STEPS` steps on `mesh` and compares losses and gathered state with one process.
fn check(model: &str, batch: u64, cfg: &TrainConfig, mesh: &str) {
    check_schedule(model, batch, cfg, mesh, PipelineSchedule::default());
}

/// [`check`] with the pipeline stages running `schedule`.
fn check_schedule(model: &str, batch: u64, cfg: &TrainConfig, mesh: &str, schedule: PipelineSchedule) {
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let (want_losses, want_state) = single(model, batch, cfg, &corpus);
    let m = train::load_model(model, batch, None).expect("model");
    let mesh_ = Mesh::parse(mesh).expect("mesh");
    let shared = Arc::new(DistributedStep::with_schedule(m, cfg.clone(), mesh_, schedule).expect("partition"));
    let mut losses = Vec::new();
    let state = train_in_process(shared, &corpus, None, STEPS, None, Duration::from_secs(60), |e| {
        if let Event::Step(r) = e {
            losses.push(r.loss);
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{mesh}: {e:#}"));
    assert_eq!(losses.len(), want_losses.len());
    for (i, (a, b)) in losses.iter().zip(&want_losses).enumerate() {
        assert!(close(*a, *b, 1e-9), "{mesh} step {}: loss {a} vs {b} on one process", i + 1);
    }
    assert_eq!(state.step, want_state.step);
    assert_eq!(state.data_position, want_state.data_position);
    for (which, (got, want)) in [
        ("params", (&state.params, &want_state.params)),
        ("state", (&state.optimizer_state, &want_state.optimizer_state)),
    ] {
        assert_eq!(got.len(), want.len());
        for (k, (x, y)) in got.iter().zip(want).enumerate() {
            assert_eq!(x.shape, y.shape);
            for (a, b) in x.to_f64_vec().iter().zip(y.to_f64_vec()) {
                assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-3), "{mesh} {which}[{k}]: {a} vs {b}");
            }
        }
    }
}

/// The small GPT, in f64 so that a mesh differs from one process only in the order
/// partial sums are added in (byte tokens need the vocabulary of 256).
const GPT: &str = "gpt:layers=4,hidden=32,heads=4,seq=16,vocab=256,dtype=fp64";

#[test]
fn dp4_adamw() {
    check(GPT, 4, &config(GPT, OptimizerKind::AdamW, 1), "dp=4");
}

#[test]
fn tp4_sgd() {
    check(GPT, 2, &config(GPT, OptimizerKind::Sgd, 1), "tp=4");
}

#[test]
fn pp4_adamw_two_micro_batches() {
    check(GPT, 2, &config(GPT, OptimizerKind::AdamW, 2), "pp=4");
}

#[test]
fn dp2_tp2_adamw_two_micro_batches() {
    check(GPT, 2, &config(GPT, OptimizerKind::AdamW, 2), "dp=2,tp=2");
}

#[test]
fn tp2_pp2_sgd() {
    check(GPT, 2, &config(GPT, OptimizerKind::Sgd, 1), "tp=2,pp=2");
}

const ONE_F_ONE_B: PipelineSchedule = PipelineSchedule { kind: Schedule::OneFOneB, interleave: 1 };
const GPIPE: PipelineSchedule = PipelineSchedule { kind: Schedule::GPipe, interleave: 1 };
const INTERLEAVED_2: PipelineSchedule = PipelineSchedule { kind: Schedule::OneFOneB, interleave: 2 };

#[test]
fn pp2_one_f_one_b_four_micro_batches() {
    check_schedule(GPT, 1, &config(GPT, OptimizerKind::AdamW, 4), "pp=2", ONE_F_ONE_B);
}

#[test]
fn pp4_one_f_one_b_eight_micro_batches() {
    check_schedule(GPT, 1, &config(GPT, OptimizerKind::Sgd, 8), "pp=4", ONE_F_ONE_B);
}

#[test]
fn pp2_interleaved_two_chunks() {
    check_schedule(GPT, 1, &config(GPT, OptimizerKind::AdamW, 4), "pp=2", INTERLEAVED_2);
}

#[test]
fn tp2_pp2_one_f_one_b_four_micro_batches() {
    check_schedule(GPT, 1, &config(GPT, OptimizerKind::Sgd, 4), "tp=2,pp=2", ONE_F_ONE_B);
}

/// A schedule only reorders each stage program, so GPipe, 1F1B and interleaved 1F1B give the
/// same losses and weights bit for bit, and each stage runs its micro-batches in its order.
#[test]
fn schedules_agree_bit_for_bit_and_run_in_their_order() {
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let cfg = config(GPT, OptimizerKind::AdamW, 4);
    let run = |schedule: PipelineSchedule| {
        let m = train::load_model(GPT, 1, None).expect("model");
        let mesh = Mesh::parse("pp=2").expect("mesh");
        let shared = Arc::new(DistributedStep::with_schedule(m, cfg.clone(), mesh, schedule).expect("partition"));
        let printed = shared.module.print();
        let mut losses = Vec::new();
        let state = train_in_process(shared, &corpus, None, 2, None, Duration::from_secs(60), |e| {
            if let Event::Step(r) = e {
                losses.push(r.loss);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{schedule}: {e:#}"));
        (losses, state, printed)
    };
    let (gpipe_losses, gpipe_state, gpipe_text) = run(GPIPE);
    assert!(gpipe_text.contains("// schedule: F0 F1 F2 F3 B0 B1 B2 B3\n"), "{gpipe_text}");
    for schedule in [ONE_F_ONE_B, INTERLEAVED_2] {
        let (losses, state, text) = run(schedule);
        assert_eq!(losses, gpipe_losses, "{schedule}");
        assert_eq!(state.params, gpipe_state.params, "{schedule}");
        assert_eq!(state.optimizer_state, gpipe_state.optimizer_state, "{schedule}");
        let first_stage = if schedule == ONE_F_ONE_B {
            "F0 F1 B0 F2 B1 F3 B2 B3"
        } else {
            "F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3"
        };
        assert!(text.contains(&format!("// schedule: {first_stage}\n")), "{schedule}: {text}");
    }
}

/// What the schedule is for: 1F1B holds at most pp micro-batches' activations on a stage where
/// GPipe holds all of them. Exact peaks of live bytes per stage (pp=2, 8 micro-batches); they
/// change when the step graph or the partition changes, the ordering between them must not.
#[test]
fn one_f_one_b_holds_fewer_live_bytes_than_gpipe() {
    let peaks = |mesh: &str, schedule: PipelineSchedule| -> Vec<u64> {
        let model = "gpt:layers=4,hidden=32,heads=4,seq=64,vocab=256";
        let m = train::load_model(model, 2, None).expect("model");
        let mesh = Mesh::parse(mesh).expect("mesh");
        let cfg = config(model, OptimizerKind::AdamW, 8);
        let s = DistributedStep::with_schedule(m, cfg, mesh, schedule).expect("partition");
        s.module.stages.iter().map(|p| s.peak_live_bytes(p.ranks[0]).expect("static shapes")).collect()
    };
    let gpipe = peaks("pp=2", GPIPE);
    let one_f_one_b = peaks("pp=2", ONE_F_ONE_B);
    let interleaved = peaks("pp=2", INTERLEAVED_2);
    assert_eq!(gpipe, [8_593_732, 9_513_224]);
    assert_eq!(one_f_one_b, [2_867_140, 2_140_488]);
    assert_eq!(interleaved, [3_345_412, 2_639_368]);
    for stage in 0..2 {
        assert!(one_f_one_b[stage] < gpipe[stage], "stage {stage}: {one_f_one_b:?} vs {gpipe:?}");
        // Interleaving warms up with more forwards than 1F1B, still far fewer than GPipe.
        assert!(one_f_one_b[stage] < interleaved[stage] && interleaved[stage] < gpipe[stage]);
    }
}

/// The partition keeps each rank's blocks across steps: every updated parameter and state
/// tensor leaves in its input's sharding, the optimizer state is split like its parameter, and
/// tensor parallelism really splits weights.
#[test]
fn updated_state_keeps_the_input_sharding() {
    let m = train::load_model(GPT, 2, None).expect("model");
    let mesh = Mesh::parse("tp=2,pp=2").expect("mesh");
    let s = DistributedStep::new(m, config(GPT, OptimizerKind::AdamW, 1), mesh).expect("partition");
    let mut split = 0;
    for p in &s.module.stages {
        let g = &p.graph;
        let input =
            |name: &str| g.inputs().iter().position(|&v| g.value(v).name == name).map(|i| p.input_shardings[i].clone());
        // Every stage returns the loss first.
        assert_eq!(g.value(g.outputs()[0]).name, "loss");
        for (i, &v) in g.outputs().iter().enumerate().skip(1) {
            let name = &g.value(v).name;
            let base = name.strip_suffix(".next").unwrap_or_else(|| panic!("stage {} returns %{name}", p.stage));
            let sharding = input(base).unwrap_or_else(|| panic!("stage {} returns %{name} without %{base}", p.stage));
            assert_eq!(p.output_shardings[i], sharding, "stage {} %{name}", p.stage);
            if let Some(param) = base.strip_suffix(".m") {
                assert_eq!(input(param), Some(sharding.clone()), "stage {} %{base} is split unlike %{param}", p.stage);
            }
            split += usize::from(sharding.used_axes().any(|a| a == "tp"));
        }
    }
    assert!(split > 10, "only {split} tensors are split over tp");
}

/// Pipeline stages are cut between layers: each layer's forward (for every micro-batch), its
/// backward and its parameters' updates are on one stage, so activations go forward and their
/// gradients come back at each cut.
#[test]
fn pipeline_stages_own_whole_layers() {
    let m = train::load_model(GPT, 2, None).expect("model");
    let mesh = Mesh::parse("pp=4").expect("mesh");
    let s = DistributedStep::new(m, config(GPT, OptimizerKind::Sgd, 2), mesh).expect("partition");
    let mut updated_by = std::collections::HashMap::new();
    for p in &s.module.stages {
        let g = &p.graph;
        let mut sends = std::collections::BTreeSet::new();
        let mut recvs = std::collections::BTreeSet::new();
        for (_, n) in g.nodes() {
            match &n.op {
                Op::Sgd(_) => {
                    let param = g.value(n.inputs[0]).name.clone();
                    assert!(updated_by.insert(param.clone(), p.stage).is_none(), "%{param} is updated twice");
                }
                Op::Collective(Collective::Send { peer, .. }) => {
                    sends.insert(*peer);
                }
                Op::Collective(Collective::Recv { peer, .. }) => {
                    recvs.insert(*peer);
                }
                _ => {}
            }
        }
        // Activations to the next stage and their gradients back from it.
        let stage = p.stage as i64;
        if stage < 3 {
            assert!(sends.contains(&(stage + 1)) && recvs.contains(&(stage + 1)), "stage {stage}");
        }
        if stage > 0 {
            assert!(recvs.contains(&(stage - 1)) && sends.contains(&(stage - 1)), "stage {stage}");
        }
    }
    assert_eq!(updated_by.len(), s.step.params.len());
    let stage_of = |layer: usize| updated_by[&format!("l{layer}.attn.qkv.weight")];
    assert_eq!(stage_of(0), 0);
    assert!((1..4).all(|k| stage_of(k) >= stage_of(k - 1)), "{updated_by:?}");
    assert_eq!(updated_by["final_norm.scale"], 3, "{updated_by:?}");
    // The tied embedding is updated where it is first used.
    assert_eq!(updated_by["embed.tokens"], 0, "{updated_by:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Cutting a tensor into every rank's block and assembling the blocks gives it back.
    #[test]
    fn blocks_assemble_to_the_tensor(rows in 1usize..4, cols in 1usize..4, split in 0usize..7, seed in 0u64..1000) {
        let mesh = Mesh::parse("dp=2,tp=2").expect("mesh");
        let axes = |names: &[&str]| names.iter().map(|a| a.to_string()).collect::<Vec<String>>();
        let dims = match split {
            0 => vec![axes(&[]), axes(&[])],
            1 => vec![axes(&["dp"]), axes(&[])],
            2 => vec![axes(&[]), axes(&["tp"])],
            3 => vec![axes(&["tp"]), axes(&["dp"])],
            4 => vec![axes(&["dp", "tp"]), axes(&[])],
            5 => vec![axes(&[]), axes(&["tp", "dp"])],
            _ => vec![axes(&["tp"]), axes(&[])],
        };
        let sharding = Sharding { dims, partial: None };
        let mut rng = tessera_ir::random::SplitMix64::new(seed);
        let t = tessera_ir::random::uniform_tensor(&mut rng, tessera_ir::dtype::DType::F32, vec![rows * 4, cols * 4]);
        let ty = t.tensor_type();
        let blocks: Vec<(usize, Tensor)> =
            (0..4).map(|rank| (rank, sharding.shard_tensor(&mesh, rank, &t).expect("cut"))).collect();
        let refs: Vec<(usize, &Tensor)> = blocks.iter().map(|(r, b)| (*r, b)).collect();
        let back = assemble(&mesh, &sharding, &ty, &refs).expect("assemble");
        proptest::prop_assert_eq!(back, t);
    }
}

/// A state gathered on one mesh resumes on another: 2 steps on dp=2, then 3 on tp=2,pp=2, give
/// the 5 steps of one process.
#[test]
fn a_gathered_state_resumes_on_another_mesh() {
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let cfg = config(GPT, OptimizerKind::AdamW, 1);
    let (want_losses, want_state) = single(GPT, 2, &cfg, &corpus);
    let shared = |mesh: &str| {
        let m = train::load_model(GPT, 2, None).expect("model");
        Arc::new(DistributedStep::new(m, cfg.clone(), Mesh::parse(mesh).expect("mesh")).expect("partition"))
    };
    let mut losses = Vec::new();
    let timeout = Duration::from_secs(60);
    let mut record = |e: Event<'_>| {
        if let Event::Step(r) = e {
            losses.push(r.loss);
        }
        Ok(())
    };
    let half = train_in_process(shared("dp=2"), &corpus, None, 2, None, timeout, &mut record).expect("dp=2");
    assert_eq!(half.step, 2);
    let end =
        train_in_process(shared("tp=2,pp=2"), &corpus, Some(&half), STEPS, None, timeout, &mut record).expect("tp,pp");
    assert_eq!(losses.len(), 5);
    for (a, b) in losses.iter().zip(&want_losses) {
        assert!(close(*a, *b, 1e-9), "{a} vs {b}");
    }
    assert_eq!(end.data_position, want_state.data_position);
    for (x, y) in end.params.iter().zip(&want_state.params) {
        for (a, b) in x.to_f64_vec().iter().zip(y.to_f64_vec()) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-3), "{a} vs {b}");
        }
    }
}

fn json_losses(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            v["loss"].as_f64().expect("loss")
        })
        .collect()
}

/// `tessera train --mesh` runs the ranks on threads and prints rank 0's reports: the losses of
/// one process (in f32: within 1e-5; in bf16, the zoo default, a different order of partial
/// sums is rounded to 8 bits and drifts more), and its checkpoints resume on one process.
#[test]
fn train_on_a_mesh_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=2,hidden=16,heads=2,seq=8,vocab=256,dtype=fp32";
    let run = |extra: &[&str]| {
        let mut args = vec!["train", model, "--data", CORPUS, "--batch", "4", "--format", "json", "--seed", "3"];
        args.extend(extra);
        let out = crate::support::tessera(dir.path(), &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        json_losses(&out.stdout)
    };
    let one = run(&["--steps", "4"]);
    let meshed = run(&["--steps", "2", "--mesh", "dp=2,pp=2", "--checkpoint-dir", "ckpt", "--checkpoint-every", "2"]);
    let resumed = run(&["--steps", "4", "--resume", "ckpt"]);
    let all: Vec<f64> = meshed.iter().chain(&resumed).copied().collect();
    assert_eq!(all.len(), 4);
    for (a, b) in all.iter().zip(&one) {
        assert!(close(*a, *b, 1e-5), "{a} vs {b}: {all:?} vs {one:?}");
    }
    let out =
        crate::support::tessera(dir.path(), &["train", model, "--steps", "1", "--data", CORPUS, "--mesh", "dp=3"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not divide"), "{}", out.stderr);
}

/// `tessera opt` partitions a training step given as text: the training roles are read off its
/// update ops (state split like its parameter, updated tensors leaving in their input's
/// sharding, the loss on every rank). The MLP's step on tp=2, as a snapshot.
#[test]
fn opt_partitions_a_training_step_given_as_text() {
    use tessera_passes::train_step::{self, Optimizer, TrainStepConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let mlp = tessera_frontend::load::load_model(Path::new(&crate::support::example("mlp.mlir"))).expect("mlp");
    let mlp = mlp.bind_dims(&[("batch".to_string(), 4)].into_iter().collect()).expect("batch binds");
    let sgd = tessera_ir::ops::optim::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
    let cfg =
        TrainStepConfig { optimizer: Optimizer::Sgd(sgd), micro_batches: 1, master: tessera_ir::dtype::DType::F32 };
    let step = train_step::build(&mlp, &cfg).expect("step");
    let path = dir.path().join("mlp_step.mlir");
    std::fs::write(&path, tessera_ir::mlir::print_graph(&step.graph)).expect("write");
    let args = ["opt", "--pipeline", "shard{mesh=tp=2}", "--check-mlir", path.to_str().expect("utf-8")];
    let out = crate::support::tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("// input %w1.velocity: [{}, {tp}]"), "{}", out.stdout);
    insta::assert_snapshot!(out.stdout);
    // Without layer groups (text), pipeline stages are a cut of program order; the step still
    // computes what one device does, on every rank.
    let text_step = tessera_frontend::load::load_model(&path).expect("parse the step");
    let mut rng = tessera_ir::random::SplitMix64::new(1);
    let feeds: Vec<(String, Tensor)> = text_step
        .inputs()
        .iter()
        .map(|&v| {
            let value = text_step.value(v);
            let shape: Vec<usize> = value.ty.static_shape().expect("static").iter().map(|&d| d as usize).collect();
            let t = if value.ty.dtype.is_float() {
                tessera_ir::random::uniform_tensor(&mut rng, value.ty.dtype, shape)
            } else {
                let n = shape.iter().product();
                Tensor::from_i64(value.ty.dtype, shape, (0..n).map(|i| (i % 10) as i64).collect())
            };
            (value.name.clone(), t)
        })
        .collect();
    let want = tessera_runtime::interpreter::run(&text_step, &feeds).expect("one device");
    for mesh in ["dp=2,pp=2", "tp=2,pp=2"] {
        let config = ShardConfig::new(Mesh::parse(mesh).expect("mesh")).with_training_roles_of(&text_step);
        let module = tessera_passes::shard::partition(&text_step, &config).expect("partition");
        let inputs: Vec<_> = (0..4).map(|r| module.rank_inputs(r, &feeds).expect("cut")).collect();
        let programs: Vec<RankProgram<'_>> = (0..4)
            .map(|r| RankProgram { graph: &module.program_of(r).expect("program").graph, inputs: inputs[r].clone() })
            .collect();
        let outputs = run_spmd(&module.mesh, &programs, &SpmdConfig::default()).expect("ranks run");
        for (rank, outs) in outputs.iter().enumerate() {
            let program = module.program_of(rank).expect("program");
            for ((name, got), sharding) in outs.iter().zip(&program.output_shardings) {
                let (_, full) = want.iter().find(|(n, _)| n == name).expect("a source output");
                let block = sharding.shard_tensor(&module.mesh, rank, full).expect("cut");
                for (a, b) in got.to_f64_vec().iter().zip(block.to_f64_vec()) {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0), "{mesh} rank {rank} %{name}");
                }
            }
            assert_eq!(outs[0].0, "loss");
        }
    }
}

/// Llama's ops (RMSNorm, rotary embeddings, SwiGLU, grouped-query attention, an untied head)
/// train the same on a mesh too.
#[test]
fn llama_on_dp2_tp2_and_pp2() {
    let llama = "llama:layers=2,hidden=32,heads=4,kv_heads=2,seq=8,vocab=256,dtype=fp64";
    check(llama, 2, &config(llama, OptimizerKind::AdamW, 1), "dp=2,tp=2");
    check(llama, 2, &config(llama, OptimizerKind::Sgd, 2), "pp=2");
}

/// A sharded checkpoint writes each distinct block once: the writers of a tensor are as many as
/// its blocks, and their blocks assemble to the tensor.
#[test]
fn one_writer_per_distinct_block() {
    use tessera::train::distributed::DistributedTrainer;
    use tessera_runtime::spmd::{Communicator, LocalCommunicator};
    let m = train::load_model(GPT, 2, None).expect("model");
    let mesh = Mesh::parse("dp=2,tp=2,pp=2").expect("mesh");
    let shared = Arc::new(DistributedStep::new(m, config(GPT, OptimizerKind::AdamW, 1), mesh.clone()).expect("step"));
    let corpus = ByteCorpus::from_bytes(b"not read".to_vec());
    let state = train::init_state(&shared.step, 7);
    let comms = LocalCommunicator::world(8, Duration::from_secs(1));
    let mut writers: std::collections::HashMap<String, Vec<(usize, Tensor, Sharding)>> = Default::default();
    for (rank, comm) in comms.into_iter().enumerate() {
        let comm: Arc<dyn Communicator> = Arc::new(comm);
        let trainer = DistributedTrainer::from_state(shared.clone(), corpus.clone(), rank, comm, &state).expect("rank");
        for shard in trainer.rank_shards().expect("shards") {
            if trainer.writes_shard(&shard) {
                writers.entry(shard.name.clone()).or_default().push((
                    rank,
                    shard.tensor.clone(),
                    shard.sharding.clone(),
                ));
            }
        }
    }
    let globals =
        shared.step.params.iter().chain(&shared.step.state).zip(state.params.iter().chain(&state.optimizer_state));
    for (slot, global) in globals {
        let list = writers.get(&slot.name).unwrap_or_else(|| panic!("nobody writes {}", slot.name));
        let sharding = &list[0].2;
        let blocks = mesh.group_size(&sharding.used_axes().cloned().collect::<Vec<_>>()).expect("axes");
        assert_eq!(list.len() as u64, blocks, "{}: {sharding}", slot.name);
        let refs: Vec<(usize, &Tensor)> = list.iter().map(|(r, t, _)| (*r, t)).collect();
        assert_eq!(&assemble(&mesh, sharding, &slot.ty, &refs).expect("assemble"), global, "{}", slot.name);
    }
}
