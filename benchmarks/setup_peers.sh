#!/usr/bin/env bash
# Creates (or reuses) one virtualenv per peer for benchmarks/speed.py (issue 7).
#
#   peers/torch       torch 2.13.0 CPU + torchvision 0.28 (--no-deps)
#   peers/modelgarden tensorflow-cpu 2.21.0 + tf-models-official 2.20 + tf-keras 2.21 (--no-deps)
#   peers/litert      ai-edge-litert (the standalone TFLite interpreter; benchmarks/serving.py)
# peers/torch also gets onnx, onnxruntime and onnxscript (ONNX Runtime side of serving.py).
#
# Idempotent: a virtualenv whose import check passes is left alone (a marker file records that the
# install finished). Pass --force to rebuild both. Needs only the package registries (pip).
# Prints the seconds each install took.
#
# Usage: bash benchmarks/setup_peers.sh [--force] [torch|modelgarden|litert ...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/peers}"
PYTHON="${PEERS_PYTHON:-python3}"

FORCE=0
WANTED=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    torch|modelgarden|litert) WANTED+=("$arg") ;;
    *) echo "setup_peers.sh: unknown argument '$arg' (expected --force, torch, modelgarden, litert)" >&2; exit 2 ;;
  esac
done
[ ${#WANTED[@]} -eq 0 ] && WANTED=(torch modelgarden)

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup_peers.sh: $PYTHON is not Python 3.11 (the pinned wheels are cp311); set PEERS_PYTHON" >&2
  exit 2
fi

mkdir -p "$PEERS_DIR"

# The import check each peer must pass before it is considered installed.
TORCH_CHECK='
import torch
lib = torch.library.Library("torchvision", "DEF")  # see benchmarks/peers/run_torchvision.py
lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
import torchvision
from torchvision.models.segmentation import deeplabv3_resnet101
assert not torch.cuda.is_available() or "+cpu" in torch.__version__
import onnx, onnxruntime
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "onnxruntime", onnxruntime.__version__)
'''
LITERT_CHECK='
from ai_edge_litert import interpreter
import ai_edge_litert
print("ai-edge-litert", ai_edge_litert.__version__)
'
MG_CHECK='
import tensorflow as tf
from official.vision.configs import semantic_segmentation as cfgs
from official.vision.modeling import factory
print("tensorflow", tf.__version__)
'

fresh_venv() {  # name
  local dir="$PEERS_DIR/$1"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --upgrade "pip>=24" wheel
}

install_torch() {
  local dir="$PEERS_DIR/torch"
  fresh_venv torch
  # "+cpu" pins the CPU build (found through pip's configured find-links or the PyTorch CPU index);
  # a bare torch==2.13.0 from PyPI would be the CUDA build with ~3 GB of nvidia-* wheels.
  if ! "$dir/bin/pip" install --quiet "torch==2.13.0+cpu" numpy pillow; then
    echo "setup_peers.sh: pip found no torch==2.13.0+cpu wheel; make the PyTorch CPU wheel" \
         "reachable through pip's find-links or an extra index (pip config list)" >&2
    exit 1
  fi
  # torchvision's metadata pins the CUDA torch; --no-deps keeps the CPU one.
  "$dir/bin/pip" install --quiet --no-deps "torchvision==0.28.0"
  "$dir/bin/pip" install --quiet "onnx==1.23.2" "onnxruntime==1.32.0" "onnxscript==0.7.2"
}

install_litert() {
  local dir="$PEERS_DIR/litert"
  fresh_venv litert
  "$dir/bin/pip" install --quiet "ai-edge-litert==2.3.0" numpy
}

install_modelgarden() {
  local dir="$PEERS_DIR/modelgarden"
  fresh_venv modelgarden
  "$dir/bin/pip" install --quiet "tensorflow-cpu==2.21.0"
  # tf-models-official 2.20 pins tensorflow~=2.20 (and tensorflow-text); tf-keras pins "tensorflow",
  # not "tensorflow-cpu": install both without their dependencies, then the ones the vision code uses.
  "$dir/bin/pip" install --quiet --no-deps "tf-models-official==2.20.0" "tf-keras==2.21.0"
  "$dir/bin/pip" install --quiet gin-config pyyaml tf-slim immutabledict psutil py-cpuinfo \
    tensorflow-datasets scipy pycocotools opencv-python-headless matplotlib
}

for peer in "${WANTED[@]}"; do
  dir="$PEERS_DIR/$peer"
  marker="$dir/.installed"
  case "$peer" in
    torch) check="$TORCH_CHECK" ;;
    modelgarden) check="$MG_CHECK" ;;
    litert) check="$LITERT_CHECK" ;;
  esac
  if [ "$FORCE" -eq 0 ] && [ -f "$marker" ] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "[setup_peers] $peer: reusing $dir ($(cat "$marker"))"
    continue
  fi
  echo "[setup_peers] $peer: installing into $dir ..."
  start=$(date +%s)
  "install_$peer"
  versions=$("$dir/bin/python" -c "$check" 2>/dev/null | tail -1)
  took=$(( $(date +%s) - start ))
  echo "$versions; installed in ${took}s on $(date -u +%Y-%m-%d)" > "$marker"
  echo "[setup_peers] $peer: $versions (installed in ${took}s)"
done
