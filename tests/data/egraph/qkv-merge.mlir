// RUN: egraph,canonicalize
// Three projections of one input become one matmul against the concatenated weights and three
// slices (Q/K/V fusion).
func.func @attn(%x: tensor<4x8x64xf32>, %wq: tensor<64x64xf32> {tsr.param}, %wk: tensor<64x64xf32> {tsr.param}, %wv: tensor<64x64xf32> {tsr.param}) -> (tensor<4x8x64xf32>, tensor<4x8x64xf32>, tensor<4x8x64xf32>) {
  %q = "tsr.matmul"(%x, %wq) : (tensor<4x8x64xf32>, tensor<64x64xf32>) -> tensor<4x8x64xf32>
  %k = "tsr.matmul"(%x, %wk) : (tensor<4x8x64xf32>, tensor<64x64xf32>) -> tensor<4x8x64xf32>
  %v = "tsr.matmul"(%x, %wv) : (tensor<4x8x64xf32>, tensor<64x64xf32>) -> tensor<4x8x64xf32>
  return %q, %k, %v : tensor<4x8x64xf32>, tensor<4x8x64xf32>, tensor<4x8x64xf32>
}
