// RUN: fuse
func.func @diamond(%x: tensor<4x4xf32>, %w: tensor<4x4xf32>) -> (tensor<4x4xf32>) {
  %a = "tsr.exp"(%x) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %m = "tsr.matmul"(%a, %w) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %s = "tsr.add"(%a, %m) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %t = "tsr.tanh"(%s) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %sum = "tsr.reduce_sum"(%t) {axes = array<i64: 1>, keepdims = false} : (tensor<4x4xf32>) -> tensor<4xf32>
  %mx = "tsr.reduce_max"(%t) {axes = array<i64: 1>, keepdims = false} : (tensor<4x4xf32>) -> tensor<4xf32>
  %d = "tsr.sub"(%sum, %mx) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %db = "tsr.broadcast"(%d) : (tensor<4xf32>) -> tensor<4x4xf32>
  %o = "tsr.mul"(%db, %a) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %o : tensor<4x4xf32>
}
