// RUN: canonicalize,dce
// Two transposes compose into one; a transpose pair that cancels disappears; cast to the same
// dtype and reshape to the same type are no-ops.
func.func @f(%x: tensor<2x3x4xf32>) -> (tensor<4x2x3xf32>, tensor<2x3x4xf32>) {
  %t1 = "tsr.transpose"(%x) {perm = array<i64: 1, 0, 2>} : (tensor<2x3x4xf32>) -> tensor<3x2x4xf32>
  %t2 = "tsr.transpose"(%t1) {perm = array<i64: 2, 1, 0>} : (tensor<3x2x4xf32>) -> tensor<4x2x3xf32>
  %back = "tsr.transpose"(%t1) {perm = array<i64: 1, 0, 2>} : (tensor<3x2x4xf32>) -> tensor<2x3x4xf32>
  %same = "tsr.cast"(%back) : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %flat = "tsr.reshape"(%same) : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %e = "tsr.exp"(%flat) : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  return %t2, %e : tensor<4x2x3xf32>, tensor<2x3x4xf32>
}
