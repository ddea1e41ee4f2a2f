//! Malformed StableHLO found by the `stablehlo_parse` fuzz target: each input is a located
//! error, never a panic (FUZZING.md records the runs).

use tessera_frontend::stablehlo::import_text;

/// The generic form of `broadcast_in_dim` on a rank-1 value with two broadcast dimensions (the
/// operand's annotated type, rank 2, disagrees with the value's): the result's sizes were read
/// from the operand's second dimension, which it lacks (an index out of bounds).
#[test]
fn broadcast_dimensions_past_the_operands_rank_are_an_error() {
    let text = "func.func @main(%arg0: tensor<6xi32>) -> tensor<6x6xi32> {\n  %0 = \"stablehlo.broadcast_in_dim\"(%arg0) <{broadcast_dimensions = array<i64: 0, 1>}> : (tensor<6x1xi32>) -> tensor<6x6xi32>\n  return %0 : tensor<6x6xi32>\n}\n";
    let e = import_text(text).map(|_| ()).expect_err("a rank-1 operand with two broadcast dimensions imported");
    assert_eq!(e.to_string(), "2:8: broadcast_dimensions has 2 entries for operand tensor<6xi32>");
}
