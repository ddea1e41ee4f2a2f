// One pre-norm GPT decoder block: causal multi-head self-attention (4 heads of 16) and a GELU
// MLP (64 -> 256 -> 64), each with a residual connection. Sequence length 8, symbolic batch.
func.func @transformer_block(%x: tensor<?x8x64xf32, ["batch"]>, %ln1_scale: tensor<64xf32> {tsr.param}, %ln1_bias: tensor<64xf32> {tsr.param}, %w_qkv: tensor<64x192xf32> {tsr.param}, %w_out: tensor<64x64xf32> {tsr.param}, %ln2_scale: tensor<64xf32> {tsr.param}, %ln2_bias: tensor<64xf32> {tsr.param}, %w_up: tensor<64x256xf32> {tsr.param}, %w_down: tensor<256x64xf32> {tsr.param}) -> (tensor<?x8x64xf32, ["batch"]>) {
  %h = "tsr.layer_norm"(%x, %ln1_scale, %ln1_bias) {axis = 2 : i64, epsilon = 1.0e-05 : f64} : (tensor<?x8x64xf32, ["batch"]>, tensor<64xf32>, tensor<64xf32>) -> tensor<?x8x64xf32, ["batch"]>
  %qkv = "tsr.matmul"(%h, %w_qkv) : (tensor<?x8x64xf32, ["batch"]>, tensor<64x192xf32>) -> tensor<?x8x192xf32, ["batch"]>
  %q, %k, %v = "tsr.split"(%qkv) {axis = 2 : i64, sizes = array<i64: 64, 64, 64>} : (tensor<?x8x192xf32, ["batch"]>) -> (tensor<?x8x64xf32, ["batch"]>, tensor<?x8x64xf32, ["batch"]>, tensor<?x8x64xf32, ["batch"]>)
  %q_heads = "tsr.reshape"(%q) : (tensor<?x8x64xf32, ["batch"]>) -> tensor<?x8x4x16xf32, ["batch"]>
  %k_heads = "tsr.reshape"(%k) : (tensor<?x8x64xf32, ["batch"]>) -> tensor<?x8x4x16xf32, ["batch"]>
  %v_heads = "tsr.reshape"(%v) : (tensor<?x8x64xf32, ["batch"]>) -> tensor<?x8x4x16xf32, ["batch"]>
  %q_t = "tsr.transpose"(%q_heads) {perm = array<i64: 0, 2, 1, 3>} : (tensor<?x8x4x16xf32, ["batch"]>) -> tensor<?x4x8x16xf32, ["batch"]>
  %k_t = "tsr.transpose"(%k_heads) {perm = array<i64: 0, 2, 3, 1>} : (tensor<?x8x4x16xf32, ["batch"]>) -> tensor<?x4x16x8xf32, ["batch"]>
  %v_t = "tsr.transpose"(%v_heads) {perm = array<i64: 0, 2, 1, 3>} : (tensor<?x8x4x16xf32, ["batch"]>) -> tensor<?x4x8x16xf32, ["batch"]>
  %scores = "tsr.matmul"(%q_t, %k_t) : (tensor<?x4x8x16xf32, ["batch"]>, tensor<?x4x16x8xf32, ["batch"]>) -> tensor<?x4x8x8xf32, ["batch"]>
  %inv_sqrt_d = "tsr.constant"() {value = dense<0.25> : tensor<f32>} : () -> tensor<f32>
  %inv_sqrt_d_wide = "tsr.broadcast"(%inv_sqrt_d) : (tensor<f32>) -> tensor<?x4x8x8xf32, ["batch"]>
  %scaled = "tsr.mul"(%scores, %inv_sqrt_d_wide) : (tensor<?x4x8x8xf32, ["batch"]>, tensor<?x4x8x8xf32, ["batch"]>) -> tensor<?x4x8x8xf32, ["batch"]>
  %causal = "tsr.constant"() {value = dense<[[0.0, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09], [0.0, 0.0, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09], [0.0, 0.0, 0.0, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09], [0.0, 0.0, 0.0, 0.0, -1.0e+09, -1.0e+09, -1.0e+09, -1.0e+09], [0.0, 0.0, 0.0, 0.0, 0.0, -1.0e+09, -1.0e+09, -1.0e+09], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0e+09, -1.0e+09], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0e+09], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
  %causal_wide = "tsr.broadcast"(%causal) : (tensor<8x8xf32>) -> tensor<?x4x8x8xf32, ["batch"]>
  %masked = "tsr.add"(%scaled, %causal_wide) : (tensor<?x4x8x8xf32, ["batch"]>, tensor<?x4x8x8xf32, ["batch"]>) -> tensor<?x4x8x8xf32, ["batch"]>
  %probs = "tsr.softmax"(%masked) {axis = -1 : i64} : (tensor<?x4x8x8xf32, ["batch"]>) -> tensor<?x4x8x8xf32, ["batch"]>
  %context = "tsr.matmul"(%probs, %v_t) : (tensor<?x4x8x8xf32, ["batch"]>, tensor<?x4x8x16xf32, ["batch"]>) -> tensor<?x4x8x16xf32, ["batch"]>
  %context_t = "tsr.transpose"(%context) {perm = array<i64: 0, 2, 1, 3>} : (tensor<?x4x8x16xf32, ["batch"]>) -> tensor<?x8x4x16xf32, ["batch"]>
  %context_flat = "tsr.reshape"(%context_t) : (tensor<?x8x4x16xf32, ["batch"]>) -> tensor<?x8x64xf32, ["batch"]>
  %attn = "tsr.matmul"(%context_flat, %w_out) : (tensor<?x8x64xf32, ["batch"]>, tensor<64x64xf32>) -> tensor<?x8x64xf32, ["batch"]>
  %resid1 = "tsr.add"(%x, %attn) : (tensor<?x8x64xf32, ["batch"]>, tensor<?x8x64xf32, ["batch"]>) -> tensor<?x8x64xf32, ["batch"]>
  %h2 = "tsr.layer_norm"(%resid1, %ln2_scale, %ln2_bias) {axis = 2 : i64, epsilon = 1.0e-05 : f64} : (tensor<?x8x64xf32, ["batch"]>, tensor<64xf32>, tensor<64xf32>) -> tensor<?x8x64xf32, ["batch"]>
  %up = "tsr.matmul"(%h2, %w_up) : (tensor<?x8x64xf32, ["batch"]>, tensor<64x256xf32>) -> tensor<?x8x256xf32, ["batch"]>
  %act = "tsr.gelu"(%up) : (tensor<?x8x256xf32, ["batch"]>) -> tensor<?x8x256xf32, ["batch"]>
  %down = "tsr.matmul"(%act, %w_down) : (tensor<?x8x256xf32, ["batch"]>, tensor<256x64xf32>) -> tensor<?x8x64xf32, ["batch"]>
  %y = "tsr.add"(%resid1, %down) : (tensor<?x8x64xf32, ["batch"]>, tensor<?x8x64xf32, ["batch"]>) -> tensor<?x8x64xf32, ["batch"]>
  return %y : tensor<?x8x64xf32, ["batch"]>
}
