"""README.md, "Train on your own data": every command of the section, as written there, on a
small folder dataset (6 CamVid frames at 48x64 with 3 classes when ../shared/data/camvid is
present, synthetic shapes otherwise), with tiny step counts added to the training command."""

import json
import os
import re
import shlex
import shutil
import sys
import time

import numpy as np
import pytest
from PIL import Image

import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
CAMVID = os.path.join(SHARED, "data", "camvid")
SIZE = (48, 64)  # height, width
# CamVid ids -> the section's classes: Road -> road (1), Car -> car (2), Unlabelled -> ignore.
CAMVID_TO_MINE = {3: 1, 8: 2, 11: 255}
# Only what makes the run tiny; the section's own flags stay as they are.
TINY = {
    "deeplab.train": [
        "--training_steps=2",
        "--batch_size=2",
        "--crop_size=48,64",
        "--save_checkpoint_steps=2",
        "--log_steps=1",
        "--image_summary_steps=0",
        "--warmup_steps=0",
        "--class_weights=inverse_sqrt",
    ],
    "build_folder.py": ["--num_workers=0", "--no_progress"],
}


def section_commands():
    """The commands of the README section, continuation lines joined."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = text.split("## Train on your own data\n", 1)[1].split("\n## ", 1)[0]
    commands, current = [], None
    for line in section.splitlines():
        if current is not None:
            current += " " + line.strip().rstrip("\\").strip()
            if not line.rstrip().endswith("\\"):
                commands.append(current)
                current = None
        elif line.startswith("    python "):
            current = line.strip().rstrip("\\").strip()
            if not line.rstrip().endswith("\\"):
                commands.append(current)
                current = None
    return commands


def _frames(split, count):
    with open(os.path.join(CAMVID, f"{split}.txt"), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()][::40][:count]
    for image_path, label_path in rows:
        image = Image.open(os.path.join(CAMVID, *image_path.split("/")[-2:])).convert("RGB")
        label = np.asarray(Image.open(os.path.join(CAMVID, *label_path.split("/")[-2:])))
        mapped = np.zeros(label.shape, np.uint8)
        for source, target in CAMVID_TO_MINE.items():
            mapped[label == source] = target
        yield (
            os.path.splitext(os.path.basename(image_path))[0],
            np.asarray(image.resize(SIZE[::-1], Image.BILINEAR)),
            np.asarray(Image.fromarray(mapped).resize(SIZE[::-1], Image.NEAREST)),
        )


def _synthetic(split, count):
    rng = np.random.default_rng(0 if split == "train" else 1)
    for i in range(count):
        label = np.zeros(SIZE, np.uint8)
        label[SIZE[0] // 2 :, :] = 1  # road below
        y, x = rng.integers(8, 24), rng.integers(4, 40)
        label[y : y + 12, x : x + 20] = 2  # a car
        image = np.zeros(SIZE + (3,), np.uint8) + np.array([90, 140, 200], np.uint8)
        image[label == 1] = (80, 80, 80)
        image[label == 2] = (200, 30, 30)
        image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        yield f"{split}_{i}", image, label


def make_raw_folder(root):
    source = _frames if os.path.isfile(os.path.join(CAMVID, "train.txt")) else _synthetic
    for folder in ("images", "labels"):
        os.makedirs(os.path.join(root, folder))
    for split, count in (("train", 4), ("val", 2)):
        names = []
        for name, image, label in source(split, count):
            Image.fromarray(image).save(os.path.join(root, "images", f"{name}.png"))
            Image.fromarray(label, mode="L").save(os.path.join(root, "labels", f"{name}.png"))
            names.append(name)
        with open(os.path.join(root, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
    return source.__name__


@pytest.mark.slow
def test_every_command_of_the_section_runs(tmp_path):
    commands = section_commands()
    binaries = [
        c.split()[2] if c.split()[1] == "-m" else os.path.basename(c.split()[1]) for c in commands
    ]
    assert binaries == [
        "deeplab.inspect_dataset",
        "build_folder.py",
        "deeplab.inspect_dataset",
        "deeplab.import_official",
        "deeplab.train",
        "deeplab.evaluate",
        "deeplab.export_saved_model",
        "deeplab.predict",
    ], commands
    work = tmp_path / "work"
    os.makedirs(work / "experiments")
    shutil.copy(os.path.join(REPO, "experiments", "own_data.flags"), work / "experiments")
    shutil.copytree(os.path.join(REPO, "datasets"), work / "datasets")
    make_raw_folder(str(work / "data" / "mine_raw"))
    made_by_the_test = set(_tree(work))
    official = os.path.join(SHARED, "data", "deeplab_tflite", "deeplabv3_mnv2_pascal_quant.tflite")
    for command, binary in zip(commands, binaries):
        args = shlex.split(command)
        if binary == "deeplab.import_official":
            if not os.path.exists(official):  # no authors' file here: train from scratch
                TINY["deeplab.train"].append("--init_checkpoint=")
                continue
            args = [re.sub(r"^--tflite=.*", f"--tflite={official}", a) for a in args]
        args = [sys.executable] + args[1:] + TINY.get(binary, [])
        start = time.time()
        result = _run(args, work)
        print(f"{time.time() - start:5.1f} s  {binary}")
        assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
        if binary == "deeplab.train":
            assert "Class weights (inverse_sqrt" in result.stdout
    # visualize writes too: its PNGs follow the same umask rule.
    visualize = [sys.executable, "-m", "deeplab.visualize", "--flagfile=experiments/own_data.flags"]
    result = _run(visualize + ["--vis_num_images=1", "--eval_limit=1"], work)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_modes_follow_the_umask(work, made_by_the_test)
    record = json.load(open(work / "runs" / "mine" / "config.json", encoding="utf-8"))
    assert len(record["class_weights"]) == 3 and record["num_classes"] == 3
    assert os.path.getsize(work / "mine_sheet.png") > 0
    assert os.path.isfile(work / "exports" / "mine" / "saved_model.pb")
    written = os.listdir(work / "out" / "mine")
    assert len([n for n in written if n.endswith(".png")]) >= 6, written


# The commands run under this umask (group may read, others nothing): every file and folder
# they write must get the ordinary mode under it (0640 / 0750), never mkstemp's 0600 or
# mkdtemp's 0700, and never more than the umask allows.
UMASK = 0o027


def _run(args, work):
    """The command as written (``python -m ...`` or ``python datasets/...``), from ``work``."""
    return harness.run(args, cwd=work, umask=UMASK, timeout=600)


def _tree(root):
    for folder, names, files in os.walk(root):
        for name in names + files:
            yield os.path.join(folder, name)


def _assert_modes_follow_the_umask(work, made_by_the_test):
    wrong = []
    checked = 0
    for path in _tree(work):
        if path in made_by_the_test or os.path.islink(path):
            continue
        mode = os.stat(path).st_mode & 0o777
        expected = (0o777 if os.path.isdir(path) else 0o666) & ~UMASK
        # Executable bits are the writer's business; the read/write bits must be the umask's.
        if mode & 0o666 != expected & 0o666:
            wrong.append(f"{os.path.relpath(path, work)}: {oct(mode)}")
        checked += 1
    assert checked > 30  # data, runs, weights, exports, out, the sheet
    for folder in ("data/mine", "runs/mine", "exports/mine", "out/mine"):
        assert os.path.isdir(work / folder), folder
    if os.path.isdir(work / "weights"):
        assert not [p for p in wrong if p.startswith("weights")], wrong
    assert not wrong, wrong
