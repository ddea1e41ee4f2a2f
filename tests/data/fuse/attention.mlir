// RUN: fuse
func.func @attention(%q: tensor<2x4x8xf32>, %k: tensor<2x8x4xf32>, %v: tensor<2x4x8xf32>, %mask: tensor<4x4xf32>) -> (tensor<2x4x8xf32>) {
  %s = "tsr.matmul"(%q, %k) : (tensor<2x4x8xf32>, tensor<2x8x4xf32>) -> tensor<2x4x4xf32>
  %c = "tsr.constant"() {value = dense<0.5> : tensor<f32>} : () -> tensor<f32>
  %cb = "tsr.broadcast"(%c) : (tensor<f32>) -> tensor<2x4x4xf32>
  %scaled = "tsr.mul"(%s, %cb) : (tensor<2x4x4xf32>, tensor<2x4x4xf32>) -> tensor<2x4x4xf32>
  %mb = "tsr.broadcast"(%mask) : (tensor<4x4xf32>) -> tensor<2x4x4xf32>
  %masked = "tsr.add"(%scaled, %mb) : (tensor<2x4x4xf32>, tensor<2x4x4xf32>) -> tensor<2x4x4xf32>
  %p = "tsr.softmax"(%masked) {axis = -1 : i64} : (tensor<2x4x4xf32>) -> tensor<2x4x4xf32>
  %o = "tsr.matmul"(%p, %v) : (tensor<2x4x4xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %o : tensor<2x4x8xf32>
}
