//! `tessera test-onnx`: run ONNX backend node tests through import and the reference
//! interpreter, ending with `onnx-node: P passed, F failed, U unsupported`. It exits non-zero
//! when a case fails, or, with `--manifest`, when a case the manifest lists does not pass (the
//! manifest is then the contract: known failures outside it are reported, not fatal).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use tessera_frontend::onnx::conformance::{run_node_tests_with, CaseResult, Manifest, Outcome, Tolerances};
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;

#[derive(Args)]
pub struct TestOnnxArgs {
    /// A directory of node tests (each a directory with model.onnx and test_data_set_*/),
    /// e.g. the one scripts/fetch-onnx-tests.sh fills.
    pub dir: PathBuf,
    /// Print one JSON object per case (name, outcome, reason, bound inputs) before the summary.
    #[arg(long)]
    pub json: bool,
    /// A manifest of the cases that must pass (one name per line, `#` comments), e.g.
    /// tests/conformance/onnx-node-passing.txt: regressions are named, newly passing cases counted.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// With --manifest: the cases known not to pass, one `name: reason` per line, e.g.
    /// tests/conformance/onnx-node-excluded.txt. Every case must then be listed or excluded.
    #[arg(long, value_name = "FILE", requires = "manifest")]
    pub excluded: Option<PathBuf>,
    /// Per-case tolerances in place of the runner's defaults (rtol 1e-3, atol 1e-7), one
    /// `name: rtol=R atol=A` per line, e.g. tests/conformance/onnx-node-tolerances.txt (onnx's
    /// own backend test's per-case tolerances).
    #[arg(long, value_name = "FILE")]
    pub tolerances: Option<PathBuf>,
}

fn interpreter(g: &Graph, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, String> {
    tessera_runtime::interpreter::run(g, inputs).map_err(|e| e.to_string())
}

fn case_json(case: &CaseResult) -> serde_json::Value {
    let (outcome, reason) = match &case.outcome {
        Outcome::Passed => ("passed", None),
        Outcome::Failed(m) => ("failed", Some(m.as_str())),
        Outcome::Unsupported(m) => ("unsupported", Some(m.as_str())),
    };
    serde_json::json!({
        "name": case.name,
        "outcome": outcome,
        "reason": reason,
        "bound_inputs": case.bound_inputs,
    })
}

pub fn run(args: TestOnnxArgs) -> Result<()> {
    let tolerances = match &args.tolerances {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the tolerances", path.display()))?;
            Tolerances::parse(&text).with_context(|| format!("{}", path.display()))?
        }
        None => Tolerances::default(),
    };
    let summary =
        run_node_tests_with(&args.dir, &interpreter, &tolerances).with_context(|| format!("{}", args.dir.display()))?;
    for case in &summary.cases {
        if args.json {
            println!("{}", case_json(case));
        } else if let Outcome::Failed(reason) = &case.outcome {
            println!("FAILED {}: {reason}", case.name);
        }
    }
    println!("{summary}");
    let Some(path) = &args.manifest else {
        if summary.failed > 0 {
            bail!("{} of {} ONNX node tests failed", summary.failed, summary.cases.len());
        }
        return Ok(());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the manifest", path.display()))?;
    let mut manifest = Manifest::parse(&text).with_context(|| format!("{}", path.display()))?;
    if let Some(excluded) = &args.excluded {
        let text = std::fs::read_to_string(excluded)
            .with_context(|| format!("{}: cannot read the exclusion list", excluded.display()))?;
        manifest = manifest.with_exclusions(&text).with_context(|| format!("{}", excluded.display()))?;
    }
    let check = manifest.check(&summary);
    println!("{check}");
    if !check.holds() {
        bail!(
            "{}: {} listed node test(s) regressed and {} are missing; {} do not pass without an exclusion, {} excluded pass",
            path.display(),
            check.regressed.len(),
            check.missing.len(),
            check.unexcluded.len(),
            check.excluded_but_passing.len()
        );
    }
    Ok(())
}
