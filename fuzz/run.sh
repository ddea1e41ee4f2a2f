#!/usr/bin/env bash
# Runs every fuzz target (or those named after the time) for SECONDS each, two at a time (the
# reference machine has 2 cores), on the corpus that fuzz/seed.sh fills. A crash, a timeout
# (an input over 10 s), or an input that makes the process use more than 4 GiB is a failure:
# libFuzzer writes the input to fuzz/artifacts/<target>/ and this script exits non-zero.
# Usage: fuzz/run.sh SECONDS [TARGET...]; the logs go to fuzz/logs/<target>.log.
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:?seconds per target}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx_import mlir_parse npy_read artifact_load rule_parse elf_read stablehlo_parse)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
[ -d corpus ] || bash seed.sh
mkdir -p logs
# Stable Rust: cargo-fuzz's default AddressSanitizer needs nightly's -Zsanitizer, so the
# targets run without a sanitizer (-s none); libFuzzer's coverage instrumentation is stable.
cargo fuzz build -s none -O || exit 1
run() {
  local t=$1 limits=()
  # Each rule of a rule file is type-checked on sample shapes (milliseconds per rule): short
  # files keep the rule parser's target at hundreds of executions a second rather than ten.
  [ "$t" = rule_parse ] && limits=(-max_len=1024)
  mkdir -p "corpus/$t" "artifacts/$t"
  cargo fuzz run -s none -O "$t" "corpus/$t" -- -max_total_time="$seconds" -timeout=10 "${limits[@]}" \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1
  local rc=$?
  local execs
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$')
  echo "$t: exit $rc, ${execs:-?} executions in ${seconds} s, corpus $(ls "corpus/$t" | wc -l) inputs"
  return $rc
}
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" &
  first=$!
  if [ $((i + 1)) -lt ${#targets[@]} ]; then
    run "${targets[i + 1]}" || status=1
  fi
  wait $first || status=1
done
exit $status
