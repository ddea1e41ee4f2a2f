// A small image classifier: 3x3 conv (3 -> 8 channels, pad 1) + ReLU, 2x2 max pool, a
// depthwise 3x3 conv, global average pooling by reduce_mean, and a linear head to 10 classes.
func.func @cnn(%image: tensor<?x3x16x16xf32, ["batch"]>, %conv1_w: tensor<8x3x3x3xf32> {tsr.param}, %dw_w: tensor<8x1x3x3xf32> {tsr.param}, %head_w: tensor<8x10xf32> {tsr.param}) -> (tensor<?x10xf32, ["batch"]>) {
  %c1 = "tsr.conv2d"(%image, %conv1_w) {dilations = array<i64: 1, 1>, groups = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<?x3x16x16xf32, ["batch"]>, tensor<8x3x3x3xf32>) -> tensor<?x8x16x16xf32, ["batch"]>
  %r1 = "tsr.relu"(%c1) : (tensor<?x8x16x16xf32, ["batch"]>) -> tensor<?x8x16x16xf32, ["batch"]>
  %p1 = "tsr.max_pool2d"(%r1) {dilations = array<i64: 1, 1>, kernel = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, strides = array<i64: 2, 2>} : (tensor<?x8x16x16xf32, ["batch"]>) -> tensor<?x8x8x8xf32, ["batch"]>
  %c2 = "tsr.conv2d"(%p1, %dw_w) {dilations = array<i64: 1, 1>, groups = 8 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<?x8x8x8xf32, ["batch"]>, tensor<8x1x3x3xf32>) -> tensor<?x8x8x8xf32, ["batch"]>
  %r2 = "tsr.relu"(%c2) : (tensor<?x8x8x8xf32, ["batch"]>) -> tensor<?x8x8x8xf32, ["batch"]>
  %pooled = "tsr.reduce_mean"(%r2) {axes = array<i64: 2, 3>, keepdims = false} : (tensor<?x8x8x8xf32, ["batch"]>) -> tensor<?x8xf32, ["batch"]>
  %logits = "tsr.matmul"(%pooled, %head_w) : (tensor<?x8xf32, ["batch"]>, tensor<8x10xf32>) -> tensor<?x10xf32, ["batch"]>
  return %logits : tensor<?x10xf32, ["batch"]>
}
