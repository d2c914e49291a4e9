#!/usr/bin/env bash
# Everything aecli checks on a CUDA machine, in one run: the test suite (CUDA tests
# included), every training path from the shell with --device cuda, torchrun (one rank
# trains; two on a one-GPU node get the usage error; NCCL itself needs 2+ GPUs), and the
# GPU speed and precision tables. Logs go to $OUT (default gpu-session/).
#
#   bash benchmarks/gpu_session.sh [tests|gputests] [cli] [speed] [precision] [compile]
#
# (default: tests cli speed precision compile; gputests: only the tests that use CUDA
# or torchrun). SPECS and COMPILED choose the shell paths (|-separated --kind specs: those
# trained, by default all; those also trained with --compile, by default basic, vae, conv).
# Assumes torch with CUDA and aecli's dependencies are installed; installs aecli
# itself (editable, no dependencies) when `aecli` is not on PATH. All of it takes about
# 16 minutes on an H100 (suite 4, shell paths 7 with tf32, tables 5); where one command may run 10,
# run `tests speed`, then `cli precision compile`. Offline machines:
# put wheels of hatchling, trove-classifiers, tomlkit and editables in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-session}
mkdir -p "$OUT"
parts=${*:-tests cli speed precision compile}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
if ! command -v aecli >/dev/null; then
  if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl; fi
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi
aecli --version || exit 1

if [[ $parts == *gputests* ]]; then
  echo "== the tests that use CUDA or torchrun"
  timeout 300 python3 -m pytest -q -n 8 -p no:cacheprovider -rfs --durations=5 -m gpu \
    tests 2>&1 | tee "$OUT/tests.log" | tail -40
  timeout 300 python3 -m pytest -q -n 8 -p no:cacheprovider -rfs tests/test_distributed.py \
    tests/test_precision.py 2>&1 | tail -5
elif [[ $parts == *tests* ]]; then
  echo "== test suite"
  timeout 300 python3 -m pytest -q -n 12 -p no:cacheprovider -rfs --durations=5 2>&1 | tee "$OUT/tests.log" | tail -40
fi

if [[ $parts == *cli* ]]; then
  echo "== every training path with --device cuda"
  work=$(mktemp -d)
  aecli example digits -o "$work/d.csv"
  python3 -c "import numpy as np; np.save('$work/p.npy', np.random.default_rng(0).random((2000, 784), dtype=np.float32))"
  fails=0
  check() {  # name, then the command
    local name=$1; shift
    if "$@" >"$work/out" 2>"$work/err"; then echo "ok   $name"; else
      echo "FAIL $name: $(tail -3 "$work/err" | tr '\n' ' ')"; fails=$((fails + 1)); fi
  }
  all="basic|basic --hidden 64,32|basic --tied|denoise --noise gaussian|denoise --noise dropout|sparse"
  all+="|vae|basic --loss bce|basic --layerwise|basic --arch conv --image-shape 8x8"
  all+="|vae --arch conv --image-shape 8x8"
  IFS='|' read -ra specs <<<"${SPECS:-$all}"
  for spec in "${specs[@]}"; do
    runs=("fp32" "bf16" "tf32")
    if [[ "|${COMPILED:-basic|vae|basic --arch conv --image-shape 8x8}|" == *"|$spec|"* ]]; then runs+=("fp32 --compile" "bf16 --compile"); fi
    for run in "${runs[@]}"; do
      set -- $run
      model="$work/m.safetensors"
      check "$spec $run" aecli train "$work/d.csv" --kind $spec --precision "$@" --device cuda \
        --epochs 3 -q -o "$model"
    done
    check "$spec: encode/reconstruct/score/evaluate" bash -c "aecli encode $model $work/d.csv > /dev/null && \
      aecli reconstruct $model $work/d.csv -o $work/r.npy && aecli score $model $work/d.csv > /dev/null && \
      aecli evaluate $model $work/d.csv > /dev/null"
  done
  check "sample" aecli sample "$work/m.safetensors" -n 5
  for flags in "" "--precision bf16" "--precision tf32" "--compile"; do
    aecli train "$work/d.csv" --kind vae --device cuda --epochs 2 -q -o "$work/a.safetensors" $flags
    aecli train "$work/d.csv" --kind vae --device cuda --epochs 2 -q -o "$work/b.safetensors" $flags
    check "same seed, same file on cuda ($flags)" cmp "$work/a.safetensors" "$work/b.safetensors"
  done
  aecli train "$work/d.csv" --device cuda --epochs 2 -q -o "$work/r2.safetensors"
  aecli train "$work/d.csv" --device cuda --epochs 4 -q -o "$work/r4.safetensors"
  check "resume 2 -> 4 on cuda is the 4-epoch run" bash -c "aecli train $work/d.csv --device cuda \
    --epochs 4 -q --resume $work/r2.safetensors -o $work/r2.safetensors && cmp $work/r2.safetensors $work/r4.safetensors"
  check "streamed .npy on cuda" aecli train "$work/p.npy" --chunk-rows 500 --device cuda --epochs 2 -q \
    -o "$work/s.safetensors"
  check "torchrun, 1 rank" torchrun --nproc-per-node 1 -m aecli train "$work/d.csv" \
    --device cuda --epochs 2 -q -o "$work/t.safetensors"
  torchrun --nproc-per-node 2 -m aecli train "$work/d.csv" --device cuda --epochs 2 -q \
    -o "$work/t2.safetensors" 2>&1 | grep "aecli:" | sort -u
  check "python API on cuda" python3 -c "
import numpy as np, aecli
x = np.load('$work/p.npy')[:500]
m = aecli.Autoencoder(epochs=2, device='cuda').fit(x)
assert m.transform(x).shape[0] == 500"
  echo "cli failures: $fails"
fi

if [[ $parts == *speed* ]]; then
  echo "== speed (no compile)"
  python3 benchmarks/train_speed.py --device cuda --tf32 --batches 256,4096,16384 2>&1 | tee "$OUT/speed.log"
fi
if [[ $parts == *precision* ]]; then
  echo "== held-out error: bf16 and tf32 against fp32"
  python3 benchmarks/precision.py --device cuda --seeds 0,1 2>&1 | tee "$OUT/precision.log"
  python3 benchmarks/precision.py --device cuda --seeds 0,1 --against tf32 2>&1 | tee -a "$OUT/precision.log"
fi
if [[ $parts == *compile* ]]; then
  echo "== speed with --compile, 784-wide"
  python3 benchmarks/train_speed.py --device cuda --compile --workloads pixels --batches ${COMPILE_BATCHES:-256,4096} \
    2>&1 | tee "$OUT/speed_compile.log"
fi
