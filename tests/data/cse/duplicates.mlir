// RUN: cse,dce
// The second matmul and exp repeat the first ones; the softmax over another axis does not.
func.func @f(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %a = "tsr.matmul"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %b = "tsr.matmul"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %ea = "tsr.exp"(%a) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %eb = "tsr.exp"(%b) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %s0 = "tsr.softmax"(%ea) {axis = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %s1 = "tsr.softmax"(%eb) {axis = 1 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %sum = "tsr.add"(%s0, %s1) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %sum, %eb : tensor<4x8xf32>, tensor<4x8xf32>
}
