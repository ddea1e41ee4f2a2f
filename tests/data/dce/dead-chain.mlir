// RUN: dce
// %dead1 -> %dead2 feeds nothing; the split's unused result keeps the split alive.
func.func @f(%x: tensor<4x6xf32>) -> (tensor<4x2xf32>) {
  %dead1 = "tsr.exp"(%x) : (tensor<4x6xf32>) -> tensor<4x6xf32>
  %dead2 = "tsr.tanh"(%dead1) : (tensor<4x6xf32>) -> tensor<4x6xf32>
  %a, %b = "tsr.split"(%x) {axis = 1 : i64, sizes = array<i64: 2, 4>} : (tensor<4x6xf32>) -> (tensor<4x2xf32>, tensor<4x4xf32>)
  %y = "tsr.relu"(%a) : (tensor<4x2xf32>) -> tensor<4x2xf32>
  return %y : tensor<4x2xf32>
}
