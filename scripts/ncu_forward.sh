#!/usr/bin/env bash
# The ncu evidence behind docs/kernels.md: for each shape "G K N" and token count, the
# forward's kernels (decode kernel for T <= 16; quantizer and grouped GEMM or prefill GEMM above) with the
# metrics the targets table cites. Usage: scripts/ncu_forward.sh OUT_FILE [T ...]
# (run from the repository root on the GPU machine, CuTeDSL on the path). The full sections of
# the quantizer and prefill kernel at T = $NCU_SECTIONS_T (default 8192; empty: none) go to OUT_FILE.sections.
set -u
usage="usage: scripts/ncu_forward.sh OUT_FILE [T ...]: ncu metrics of the forward's kernels per shape and T
(default T: 1 16 128 1024 8192; env NCU_SECTIONS_T: the T of the full sections, default 8192, empty: none);
needs ncu (Nsight Compute) and a Hopper GPU"
case "${1:-}" in
  -h|--help) echo "$usage"; exit 0 ;;
  "") echo "$usage" >&2; exit 2 ;;
esac
if ! command -v ncu >/dev/null; then
  echo "ncu_forward.sh: needs ncu (Nsight Compute) on the PATH" >&2
  exit 2
fi
out=$1; shift
tokens=${*:-1 16 128 1024 8192}
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
for stall in barrier long_scoreboard math_pipe_throttle mio_throttle short_scoreboard wait; do
  metrics+=,smsp__average_warps_issue_stalled_${stall}_per_issue_active.ratio
done
: > "$out"
for shape in "8 4096 1024" "8 8192 1536"; do
  for t in $tokens; do
    echo "== ($shape) T=$t" >> "$out"
    timeout 120 ncu -k regex:"quantize|grouped_gemm|decode_forward|split_k|prefill" -c 3 --metrics "$metrics" \
      python scripts/profile_decode.py $shape "$t" 2>&1 | grep -v "^==PROF==" \
      | grep -E "^  [a-z_]+kernel|dram__|gpu__|sm__|smsp__" | sed -E 's/^  (kernel_cutlass_[a-z_]+kernel)[^ ]*/  \1/' >> "$out"
  done
done
# the prefill kernel's and the quantizer's sections (pipes, shared memory, occupancy, stalls) at
# T = NCU_SECTIONS_T, whole, into OUT_FILE.sections
sections_t=${NCU_SECTIONS_T-8192}
if [ -n "$sections_t" ]; then
  timeout 240 ncu -k regex:"prefill|quantize" -c 2 --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section InstructionStats \
    python scripts/profile_decode.py 8 4096 1024 "$sections_t" 2>&1 | grep -v "^==PROF==" > "$out.sections"
fi
