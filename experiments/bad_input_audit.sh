#!/usr/bin/env bash
# Bad-input audit (issue 20): runs each binary with one bad input or flag and prints, per case,
# how many lines it printed (TensorFlow's start-up log lines and absl's "Pass --helpshort" hint
# after a flag error removed), its exit status and its
# last line. A clear error is one line naming the file or flag; a traceback is a defect.
#
#   bash experiments/bad_input_audit.sh [WORKDIR]     # about 3 minutes on 2 cores
#
# The tests assert each of these outcomes (tests/test_experiments.py, test_output_folders.py,
# test_label_classes.py, test_converters_bad_input.py, test_checkpoint_safety.py, ...); this
# script shows them all at once, as a user sees them.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK" && cd "$WORK" || exit 1
PY="${PYTHON:-python}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "from deeplab.data import synthetic; synthetic.build_synthetic_dataset('syn', num_train=8, num_val=4, image_size=(40, 40), num_classes=3, seed=1)" >/dev/null 2>&1
T="--dataset_dir=syn --backbone=resnet14_tiny --output_stride=16 --atrous_rates=1,2,3 --aspp_filters=8 --crop_size=33 --batch_size=2 --training_steps=2 --min_scale_factor=1 --max_scale_factor=1 --image_summary_steps=0"
"$PY" -m deeplab.train $T --logdir=run >/dev/null 2>&1
touch afile
"$PY" - <<'PYEOF'
import io, struct
from PIL import Image
buffer = io.BytesIO()
Image.new("RGB", (40, 30), (90, 120, 60)).save(buffer, "PNG")
Image.new("RGB", (40, 30), (90, 120, 60)).save("ok.png")
data = bytearray(buffer.getvalue())
data[16:24] = struct.pack(">II", 16000, 16000)  # the header declares 16000x16000
open("bomb.png", "wb").write(bytes(data))
PYEOF
cp -r syn claims2 && "$PY" - <<'PYEOF'
import json
info = json.load(open("claims2/dataset.json"))
info.update(num_classes=2, class_names=info["class_names"][:2], palette=info["palette"][:2])
json.dump(info, open("claims2/dataset.json", "w"))
PYEOF
cases=(
  "train --min_scale_factor=-1|$PY -m deeplab.train $T --logdir=r1 --min_scale_factor=-1"
  "train min > max scale|$PY -m deeplab.train $T --logdir=r1 --min_scale_factor=2 --max_scale_factor=1"
  "train --momentum=-5|$PY -m deeplab.train $T --logdir=r1 --momentum=-5"
  "train --shuffle_buffer=0|$PY -m deeplab.train $T --logdir=r1 --shuffle_buffer=0"
  "train --aspp_filters=0|$PY -m deeplab.train $T --logdir=r1 --aspp_filters=0"
  "train --atrous_rates=-1,2,3|$PY -m deeplab.train $T --logdir=r1 --atrous_rates=-1,2,3"
  "train empty --multi_grid|$PY -m deeplab.train $T --logdir=r1 --multi_grid="
  "train --seed=-1|$PY -m deeplab.train $T --logdir=r1 --seed=-1"
  "train negative --class_weights|$PY -m deeplab.train $T --logdir=r1 --class_weights=1,-2,1"
  "train --output_stride=7|$PY -m deeplab.train $T --logdir=r1 --output_stride=7"
  "train missing dataset|$PY -m deeplab.train $T --logdir=r1 --dataset_dir=nowhere"
  "train unknown split|$PY -m deeplab.train $T --logdir=r1 --train_split=nosuch"
  "train dataset.json class count below the labels|$PY -m deeplab.train $T --logdir=r1 --dataset_dir=claims2"
  "train --logdir is a file|$PY -m deeplab.train $T --logdir=afile"
  "train --training_steps below the run's step|$PY -m deeplab.train $T --logdir=run --training_steps=1"
  "train logdir of another model|$PY -m deeplab.train $T --logdir=run --aspp_filters=16"
  "train missing --init_checkpoint|$PY -m deeplab.train $T --logdir=r1 --init_checkpoint=nowhere/ckpt"
  "train bad TF_CONFIG|TF_CONFIG='{bad' $PY -m deeplab.train $T --logdir=r1"
  "train --crop_size=20000|$PY -m deeplab.train $T --logdir=r1 --crop_size=20000"
  "train infinite scale factors|$PY -m deeplab.train $T --logdir=r1 --min_scale_factor=inf --max_scale_factor=inf"
  "evaluate corrupt config.json|rm -rf rcc && cp -r run rcc && echo '{\"data\": ' > rcc/config.json && $PY -m deeplab.evaluate --logdir=rcc"
  "evaluate --eval_tile_size=1|$PY -m deeplab.evaluate --dataset_dir=syn --checkpoint=run --eval_tile_size=1"
  "evaluate tile 8 overlap 0.99|$PY -m deeplab.evaluate --dataset_dir=syn --checkpoint=run --eval_tile_size=8 --eval_tile_overlap=0.99"
  "evaluate missing checkpoint|$PY -m deeplab.evaluate --dataset_dir=syn --checkpoint=nowhere"
  "evaluate --eval_scales=0,-1|$PY -m deeplab.evaluate --dataset_dir=syn --checkpoint=run --eval_scales=0,-1"
  "evaluate --num_classes disagrees|$PY -m deeplab.evaluate --dataset_dir=syn --checkpoint=run --num_classes=7"
  "export --export_dir is a file|$PY -m deeplab.export_saved_model --checkpoint=run --export_dir=afile"
  "export --export_dir is a training run|$PY -m deeplab.export_saved_model --checkpoint=run --export_dir=run"
  "visualize --vis_dir is a file|$PY -m deeplab.visualize --checkpoint=run --dataset_dir=syn --vis_dir=afile"
  "predict missing input|$PY -m deeplab.predict --checkpoint=run --output_dir=p1 --input=nowhere.jpg"
  "predict --model not a model|$PY -m deeplab.predict --model=afile --output_dir=p1 --input=afile"
  "predict a PNG declaring 16000x16000, then an ok one|$PY -m deeplab.predict --checkpoint=run --output_dir=p2 --input=bomb.png,ok.png"
  "import_official --output is a file|$PY -m deeplab.import_official --tflite=afile --output=afile"
  "import_official --overwrite onto a training run|$PY -m deeplab.import_official --tflite=afile --output=run --overwrite"
  "reproduce --table=99|$PY -m deeplab.reproduce --table=99"
  "make_synthetic --num_classes=0|$PY $REPO/datasets/make_synthetic.py --output_dir=o1 --num_classes=0"
  "build_folder missing input|$PY $REPO/datasets/build_folder.py --input_dir=nowhere --output_dir=o1 --num_classes=3"
  "build_camvid list entry outside the root|mkdir -p cv && echo '/etc/passwd /etc/passwd' > cv/train.txt && $PY $REPO/datasets/build_camvid.py --input_dir=cv --output_dir=o1"
  "import_official not a TFLite file|$PY -m deeplab.import_official --tflite=afile --output=w1"
)
printf '| case | lines | exit | last line |\n|---|---|---|---|\n'
for entry in "${cases[@]}"; do
  name="${entry%%|*}"; cmd="${entry#*|}"
  raw=$(bash -c "$cmd" 2>&1; echo "AUDIT_RC=$?")
  rc=$(printf '%s\n' "$raw" | sed -n 's/^AUDIT_RC=//p' | tail -1)
  out=$(printf '%s\n' "$raw" | grep -v -E '^(W0000|I0000|WARNING: All log|AUDIT_RC=)|oneDNN|cpu_feature_guard|To enable the following|absl::InitializeLog|^Pass --helpshort')
  lines=$(printf '%s\n' "$out" | grep -c .)
  last=$(printf '%s\n' "$out" | grep . | tail -1 | cut -c1-160 | sed 's/|/\\|/g')
  printf '| %s | %s | %s | %s |\n' "$name" "$lines" "$rc" "$last"
done
