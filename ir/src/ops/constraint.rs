//! `tsr.sharding_constraint {sharding = "[{}, {tp}]"}`: an identity that pins its value's layout
//! over the mesh (what `jax.lax.with_sharding_constraint` writes as `sdy.sharding_constraint` or
//! `custom_call @Sharding`).
//!
//! Evaluated on one device it returns its operand. The `shard` pass reshards the operand into
//! `sharding` there (collectives as between any two shardings) and emits nothing for the op
//! itself, so the per-rank programs hold the constrained value in the constrained layout and
//! everything after it starts from that layout. The sharding names mesh axes only; a partial
//! sharding is not a layout a user can ask for and is refused, as is one whose rank differs from
//! the value's.

use super::ShapeResult;
use crate::sharding::{Sharding, ShardingRule};
use crate::tensor::Tensor;
use crate::types::TensorType;

/// The shape rule: the operand's type, after checking the sharding fits it.
pub fn infer(inputs: &[&TensorType], sharding: &Sharding) -> ShapeResult {
    super::expect_arity(inputs, 1)?;
    let x = inputs[0];
    if sharding.dims.len() != x.rank() {
        return Err(format!("sharding {sharding} has {} dimensions, the value {}", sharding.dims.len(), x.rank()));
    }
    if sharding.partial.is_some() {
        return Err(format!("sharding {sharding} is partial; a constraint names a layout (split or replicated axes)"));
    }
    let used: Vec<&String> = sharding.used_axes().collect();
    if let Some((_, axis)) = used.iter().enumerate().find(|(i, a)| used[..*i].contains(a)) {
        return Err(format!("sharding {sharding} uses axis '{axis}' twice"));
    }
    Ok(vec![x.clone()])
}

/// The reference semantics: the operand itself.
pub fn eval(x: &Tensor) -> Tensor {
    x.clone()
}

/// Elementwise (every dimension one factor); the `shard` pass reads the constraint itself
/// instead of propagating through this rule.
pub fn sharding_rule(x: &TensorType) -> ShardingRule {
    ShardingRule::elementwise(1, x, 1)
}

/// serde of the `sharding` field as its text (`[{}, {tp}]`), as it prints in the IR.
pub mod as_text {
    use crate::sharding::Sharding;

    pub fn serialize<S: serde::Serializer>(s: &Sharding, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&s.to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Sharding, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(de)?;
        Sharding::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::ops::Op;
    use crate::sharding::{Partial, PartialKind};

    fn constraint(text: &str) -> Op {
        Op::ShardingConstraint { sharding: Sharding::parse(text).expect("sharding") }
    }

    #[test]
    fn a_constraint_is_an_identity_on_a_value_of_its_rank() {
        let ty = TensorType::of_static(DType::F32, &[2, 3]);
        let x = Tensor::from_f64(DType::F32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let op = constraint("[{}, {tp}]");
        assert_eq!(op.infer(&[&ty]).expect("infers"), vec![ty.clone()]);
        assert_eq!(op.eval(&[&x], std::slice::from_ref(&ty)).expect("evaluates"), vec![x]);
        assert!(constraint("[{tp}]").infer(&[&ty]).expect_err("rank").contains("has 1 dimensions, the value 2"));
        // Built directly: the text parser already refuses an axis used twice.
        let tp = || vec!["tp".to_string()];
        let twice = Op::ShardingConstraint { sharding: Sharding { dims: vec![tp(), tp()], partial: None } };
        assert!(twice.infer(&[&ty]).expect_err("twice").contains("axis 'tp' twice"));
        let partial =
            Sharding { dims: vec![vec![], vec![]], partial: Some(Partial { kind: PartialKind::Sum, axes: tp() }) };
        let err = Op::ShardingConstraint { sharding: partial }.infer(&[&ty]).expect_err("partial");
        assert!(err.contains("is partial"), "{err}");
    }

    #[test]
    fn the_sharding_prints_as_a_string_attribute_and_reads_back() {
        let text = "func.func @f(%x: tensor<4x6xf32>) -> (tensor<4x6xf32>) {\n  %y = \"tsr.sharding_constraint\"(%x) {sharding = \"[{dp}, {tp}]\"} : (tensor<4x6xf32>) -> tensor<4x6xf32>\n  return %y : tensor<4x6xf32>\n}\n";
        let g = crate::mlir::parse_verified(text).expect("parses");
        assert_eq!(crate::mlir::print_graph(&g), text);
        let json = serde_json::to_string(&constraint("[{dp}, {}]")).expect("json");
        assert_eq!(json, r#"{"op":"sharding_constraint","attrs":{"sharding":"[{dp}, {}]"}}"#);
        let back: Op = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, constraint("[{dp}, {}]"));
    }
}
