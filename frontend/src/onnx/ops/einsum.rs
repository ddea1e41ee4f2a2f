//! `Einsum`: the equation's operands aligned on one label order, multiplied with broadcasting,
//! summed over the labels the output drops, and transposed to the output order. Repeated labels
//! within one operand (`ii->i`) take its diagonal first. Explicit (`->`) and implicit outputs and
//! `...` (broadcast dimensions, right-aligned across operands) are supported. The product over all
//! labels is materialized, so equations whose label extents multiply past `MAX_GENERATED`
//! elements are refused as unsupported rather than contracted pairwise.

use super::{invalid, one, unsupported, BuildError, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("Einsum", einsum);
}

/// One label of a term: a letter, or the `k`-th of the broadcast (`...`) dimensions counted
/// from the right across all operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Label {
    Broadcast(usize),
    Letter(char),
}

/// A term's labels; `rank` resolves its `...` (for the output, `None`: every broadcast label).
fn parse_term(term: &str, rank: Option<usize>, n_broadcast: usize) -> BuildResult<Vec<Label>> {
    let letters = term.replace("...", "");
    if let Some(c) = letters.chars().find(|c| !c.is_ascii_alphabetic()) {
        return invalid(format!("'{c}' in equation term '{term}' is not a letter"));
    }
    let n_letters = letters.chars().count();
    let ellipsis = term.matches("...").count();
    if ellipsis > 1 {
        return invalid(format!("term '{term}' has more than one '...'"));
    }
    let n_ellipsis = match rank {
        Some(r) if ellipsis == 0 && r != n_letters => {
            return invalid(format!("term '{term}' names {n_letters} dimensions of an operand of rank {r}"))
        }
        Some(r) if r < n_letters => return invalid(format!("term '{term}' names more dimensions than rank {r}")),
        Some(r) => r - n_letters,
        None => n_broadcast * ellipsis,
    };
    let (before, after) = term.split_once("...").unwrap_or((term, ""));
    let mut labels: Vec<Label> = before.chars().map(Label::Letter).collect();
    if ellipsis == 1 {
        labels.extend((0..n_ellipsis).rev().map(Label::Broadcast));
    }
    labels.extend(after.chars().map(Label::Letter));
    Ok(labels)
}

fn einsum(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let equation: String = cx.attrs.string("equation", "")?.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (equation.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != cx.num_inputs() {
        return invalid(format!("equation '{equation}' has {} operands, the node {}", terms.len(), cx.num_inputs()));
    }
    let mut operands = Vec::with_capacity(terms.len());
    for i in 0..terms.len() {
        operands.push(imp.value(cx, i)?);
    }
    let dtype = imp.ty(operands[0]).dtype;
    if dtype == DType::Bool || operands.iter().any(|&v| imp.ty(v).dtype != dtype) {
        return invalid("Einsum operands must share one numeric element type");
    }
    let letters_only = |t: &str| t.replace("...", "").chars().count();
    let n_broadcast =
        terms.iter().zip(&operands).map(|(t, &v)| imp.ty(v).rank().saturating_sub(letters_only(t))).max().unwrap_or(0);
    let mut labelled = Vec::with_capacity(terms.len());
    for (term, &v) in terms.iter().zip(&operands) {
        let labels = parse_term(term, Some(imp.ty(v).rank()), n_broadcast)?;
        labelled.push(take_diagonals(imp, v, labels)?);
    }
    // The output: as written, or (implicit) the broadcast labels, then the letters that appear
    // once in the whole equation, alphabetically.
    let output = match &rhs {
        Some(r) => parse_term(r, None, n_broadcast)?,
        None => {
            let mut once: Vec<Label> = Vec::new();
            let all: Vec<Label> = labelled.iter().flat_map(|(_, l)| l.iter().copied()).collect();
            for l in &all {
                if matches!(l, Label::Letter(_)) && all.iter().filter(|m| *m == l).count() == 1 {
                    once.push(*l);
                }
            }
            once.sort();
            (0..n_broadcast).rev().map(Label::Broadcast).chain(once).collect()
        }
    };
    let mut order: Vec<Label> = Vec::new();
    for (_, labels) in &labelled {
        for l in labels {
            if !order.contains(l) {
                order.push(*l);
            }
        }
    }
    if output.iter().enumerate().any(|(i, l)| output[..i].contains(l)) {
        return invalid(format!("an output label of '{equation}' repeats"));
    }
    if let Some(l) = output.iter().find(|l| !order.contains(l)) {
        return invalid(format!("output label {l:?} of '{equation}' is not in any operand"));
    }
    // The product spans every label at once (no contraction order is searched), so its size
    // is capped like the constants the importer makes up.
    let mut extent_of = std::collections::BTreeMap::new();
    for (v, labels) in &labelled {
        let dims = imp.ty(*v).dims;
        for (l, d) in labels.iter().zip(&dims) {
            let n = d.as_static().ok_or_else(|| BuildError::Unsupported(format!("Einsum over symbolic {d}")))?;
            let e = extent_of.entry(*l).or_insert(n);
            *e = (*e).max(n);
        }
    }
    let span = extent_of.values().try_fold(1u64, |acc, &n| acc.checked_mul(n)).unwrap_or(u64::MAX);
    super::generated_len(span, &format!("Einsum '{equation}' (one product over all labels)"))?;
    // Align every operand to `order` (missing labels as extent 1) and multiply.
    let mut product: Option<ValueId> = None;
    for (v, labels) in labelled {
        let perm: Vec<i64> =
            order.iter().filter_map(|l| labels.iter().position(|m| m == l)).map(|p| p as i64).collect();
        let moved = if perm.iter().enumerate().all(|(i, &p)| i as i64 == p) {
            v
        } else {
            imp.add(Op::Transpose { perm: perm.clone() }, &[v])?
        };
        let dims = imp.ty(v).dims;
        let aligned: Vec<Dim> = order
            .iter()
            .map(|l| labels.iter().position(|m| m == l).map_or(Dim::Static(1), |p| dims[p].clone()))
            .collect();
        let aligned = imp.reshape(moved, aligned)?;
        product = Some(match product {
            Some(p) => imp.binary(BinaryOp::Mul, p, aligned)?,
            None => aligned,
        });
    }
    let mut y = product.ok_or_else(|| BuildError::Invalid("Einsum needs an operand".into()))?;
    let dropped: Vec<i64> =
        order.iter().enumerate().filter(|(_, l)| !output.contains(l)).map(|(i, _)| i as i64).collect();
    let kept: Vec<Label> = order.iter().copied().filter(|l| output.contains(l)).collect();
    if !dropped.is_empty() {
        y = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: dropped, keepdims: false }, &[y])?;
    }
    let perm: Vec<i64> = output.iter().filter_map(|l| kept.iter().position(|m| m == l)).map(|p| p as i64).collect();
    if perm.iter().enumerate().any(|(i, &p)| i as i64 != p) {
        y = imp.add(Op::Transpose { perm }, &[y])?;
    }
    one(y)
}

/// `v` with every label that repeats within its term reduced to one dimension (the diagonal):
/// the entries off the diagonal are zeroed and the second occurrence summed away.
fn take_diagonals(imp: &mut Importer, v: ValueId, labels: Vec<Label>) -> BuildResult<(ValueId, Vec<Label>)> {
    let (mut v, mut labels) = (v, labels);
    while let Some((a, b)) = (0..labels.len())
        .flat_map(|a| (a + 1..labels.len()).map(move |b| (a, b)))
        .find(|&(a, b)| labels[a] == labels[b])
    {
        let dims = imp.ty(v).dims;
        let (Some(n), Some(m)) = (dims[a].as_static(), dims[b].as_static()) else {
            return unsupported("a diagonal over symbolic dimensions");
        };
        if n != m {
            return invalid(format!("repeated label {:?} has extents {n} and {m}", labels[a]));
        }
        let len = super::generated_len(n.saturating_mul(n), "Einsum's diagonal mask")?;
        let mut shape = vec![1usize; dims.len()];
        (shape[a], shape[b]) = (n as usize, n as usize);
        let eye: Vec<i64> = (0..len as u64).map(|k| (k / n == k % n) as i64).collect();
        let mask = imp.constant(Tensor::from_i64(DType::Bool, shape, eye));
        let zero = imp.scalar(imp.ty(v).dtype, 0.0);
        let masked = imp.select(mask, v, zero)?;
        v = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![b as i64], keepdims: false }, &[masked])?;
        labels.remove(b);
    }
    Ok((v, labels))
}
