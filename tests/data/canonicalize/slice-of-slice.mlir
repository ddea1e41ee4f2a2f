// RUN: canonicalize
// A strided slice of a strided slice is one slice: rows 1,3,5,7,9 then 3,7 of x; columns 2..6
// then 1..3 of those.
func.func @f(%x: tensor<10x8xf32>) -> (tensor<2x2xf32>) {
  %a = "tsr.slice"(%x) {ends = array<i64: 10, 6>, starts = array<i64: 1, 2>, steps = array<i64: 2, 1>} : (tensor<10x8xf32>) -> tensor<5x4xf32>
  %b = "tsr.slice"(%a) {ends = array<i64: 4, 3>, starts = array<i64: 1, 1>, steps = array<i64: 2, 1>} : (tensor<5x4xf32>) -> tensor<2x2xf32>
  return %b : tensor<2x2xf32>
}
