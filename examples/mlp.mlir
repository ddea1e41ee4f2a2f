// A two-layer perceptron classifier: 32 features -> 64 hidden (GELU) -> 10 logits.
// The batch dimension is symbolic; `tessera run` binds it from the input it is given.
func.func @mlp(%x: tensor<?x32xf32, ["batch"]>, %w1: tensor<32x64xf32> {tsr.param}, %b1: tensor<64xf32> {tsr.param}, %w2: tensor<64x10xf32> {tsr.param}, %b2: tensor<10xf32> {tsr.param}) -> (tensor<?x10xf32, ["batch"]>) {
  %h = "tsr.matmul"(%x, %w1) : (tensor<?x32xf32, ["batch"]>, tensor<32x64xf32>) -> tensor<?x64xf32, ["batch"]>
  %b1_wide = "tsr.broadcast"(%b1) : (tensor<64xf32>) -> tensor<?x64xf32, ["batch"]>
  %h_biased = "tsr.add"(%h, %b1_wide) : (tensor<?x64xf32, ["batch"]>, tensor<?x64xf32, ["batch"]>) -> tensor<?x64xf32, ["batch"]>
  %a = "tsr.gelu"(%h_biased) : (tensor<?x64xf32, ["batch"]>) -> tensor<?x64xf32, ["batch"]>
  %o = "tsr.matmul"(%a, %w2) : (tensor<?x64xf32, ["batch"]>, tensor<64x10xf32>) -> tensor<?x10xf32, ["batch"]>
  %b2_wide = "tsr.broadcast"(%b2) : (tensor<10xf32>) -> tensor<?x10xf32, ["batch"]>
  %logits = "tsr.add"(%o, %b2_wide) : (tensor<?x10xf32, ["batch"]>, tensor<?x10xf32, ["batch"]>) -> tensor<?x10xf32, ["batch"]>
  return %logits : tensor<?x10xf32, ["batch"]>
}
