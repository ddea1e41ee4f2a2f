// RUN: fuse
func.func @mlp(%x: tensor<4x8xf32>, %scale: tensor<8xf32>, %bias: tensor<8xf32>, %w: tensor<8x16xf32>, %b: tensor<16xf32>) -> (tensor<4x16xf32>, tensor<4x8xf32>) {
  %n = "tsr.layer_norm"(%x, %scale, %bias) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %h = "tsr.matmul"(%n, %w) : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %bb = "tsr.broadcast"(%b) : (tensor<16xf32>) -> tensor<4x16xf32>
  %hb = "tsr.add"(%h, %bb) : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %g = "tsr.gelu"(%hb) : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %r = "tsr.add"(%x, %n) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %g, %r : tensor<4x16xf32>, tensor<4x8xf32>
}
