"""The experiment flagfiles and the row definitions against the paper's tables.

Checks that every flagfile parses with every binary's absl flags, that every row of Tables
1-13 of PAPER_TABLES.md has a definition with the paper's number, that each row's
flags say what the row's label says, and that experiments/README.md is generated from them.
"""

import glob
import json
import os
import re
import sys

import pytest

import harness
from deeplab.config import experiment
from deeplab.config import flags as config_flags
from deeplab.config import paper_tables
from deeplab.data import datasets_info
from deeplab.evaluation.inference import CITYSCAPES_TEST_SCALES
from deeplab.evaluation.inference import PAPER_EVAL_SCALES
from deeplab.orchestration import plan
from deeplab.orchestration import reproduction

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_TABLES_MD = os.environ.get("DEEPLAB_PAPER_TABLES", "/work/shared/PAPER_TABLES.md")
REPRODUCED_TABLES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
BINARIES = ("train", "evaluate", "visualize", "reproduce", "export_saved_model", "predict")


# What deeplab.reproduce hands its planner: every flagfile's config, read as deeplab.train reads it.
CONFIGS = {
    f: config_flags.config_of_args([plan.flagfile_arg(f, REPO_ROOT)])
    for f in paper_tables.all_flagfiles()
}
PLANNER = plan.Planner(CONFIGS)


def all_rows():
    return [(table, row) for table in paper_tables.TABLES.values() for row in table.rows]


def test_every_table_that_training_reproduces_is_defined():
    assert tuple(sorted(paper_tables.TABLES)) == REPRODUCED_TABLES
    assert paper_tables.get_table(11).number == 11
    with pytest.raises(ValueError, match="--table=14: choose one of"):
        paper_tables.get_table(14)


def test_flagfiles_in_experiments_are_exactly_those_the_tables_use():
    pattern = os.path.join(REPO_ROOT, "experiments", "*.flags")
    on_disk = {os.path.relpath(p, REPO_ROOT) for p in glob.glob(pattern)}
    on_disk.discard(os.path.join("experiments", "quickstart.flags"))
    on_disk.discard(
        os.path.join("experiments", "camvid.flags")
    )  # issue 8: real data, not a paper row
    # Issue 18: fine-tuning the authors' imported PASCAL model on CamVid, not a paper row.
    on_disk.discard(os.path.join("experiments", "camvid_from_pascal.flags"))
    # Issue 34: its second stage (OS 8, BN frozen, lr 0.001).
    on_disk.discard(os.path.join("experiments", "camvid_from_pascal_stage2.flags"))
    # Issue 30: the template of README.md's "Train on your own data", not a paper row.
    on_disk.discard(os.path.join("experiments", "own_data.flags"))
    # Issue 33: quantization-aware fine-tuning of the CamVid model and of the authors' import.
    on_disk.discard(os.path.join("experiments", "camvid_qat.flags"))
    on_disk.discard(os.path.join("experiments", "official_qat.flags"))
    assert on_disk == set(paper_tables.all_flagfiles())


@pytest.mark.slow
def test_real_data_flagfiles_parse_and_build_their_model():
    script = (
        "import json, sys\n"
        "from absl import flags\n"
        "import deeplab.train\n"
        "from deeplab.config import flags as experiment_flags\n"
        "import deeplab\n"
        "FLAGS = flags.FLAGS\n"
        "out = {}\n"
        "for name in ('camvid', 'camvid_from_pascal', 'camvid_from_pascal_stage2',\n"
        "             'camvid_qat'):\n"
        "    FLAGS(['train', f'--flagfile=experiments/{name}.flags'])\n"
        "    kwargs = experiment_flags.model_kwargs(11)\n"
        "    out[name] = [kwargs['backbone'], deeplab.build_model(**kwargs).count_params(),\n"
        "                 FLAGS.init_checkpoint, FLAGS.freeze_batch_norm,\n"
        "                 FLAGS.output_stride, FLAGS.base_learning_rate,\n"
        "                 FLAGS.training_steps, FLAGS.logits_init_stddev,\n"
        "                 FLAGS.quantize_aware]\n"
        "    FLAGS.unparse_flags()\n"
        "print(json.dumps(out))\n"
    )
    result = harness.run("-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["camvid"][0] == "resnet50" and out["camvid"][2] is None
    # MobileNetV2 with the authors' 1x1 + pooling head, from the import, BN frozen.
    assert out["camvid_from_pascal"][0] == "mobilenet_v2"
    assert out["camvid_from_pascal"][1] < 3_000_000
    assert out["camvid_from_pascal"][2:] == [
        "weights/mnv2_pascal",
        True,
        16,
        0.007,
        2500,
        0.0,
        False,
    ]
    # Stage 2 (issue 34): stage 1's run, at OS 8, BN frozen, the paper's stage-2 rate.
    stage2 = out["camvid_from_pascal_stage2"]
    assert stage2[0] == "mobilenet_v2" and stage2[1] == out["camvid_from_pascal"][1]
    assert stage2[2:] == ["runs/camvid_from_pascal", True, 8, 0.001, 300, 0.0, False]
    # Issue 33: the stage-1 run fine-tuned with quantization in the loop: the same model plus
    # three scalars (min, max, set) per activation range (66 of them) and the weight grid of
    # each convolution's output channel (16,555).
    qat = out["camvid_qat"]
    assert qat[0] == "mobilenet_v2" and qat[1] - out["camvid_from_pascal"][1] == 3 * 66 + 16_555
    assert qat[2:] == ["runs/camvid_from_pascal", True, 16, 1e-4, 600, 0.0, True]


# ------------------------------------------------------------------------------------------------
# Every flagfile and every row parse with every binary.
# ------------------------------------------------------------------------------------------------

_PARSE_SCRIPT = r"""
import importlib, json, sys
from absl import flags
importlib.import_module(sys.argv[1])
from deeplab.config import flags as experiment_flags
FLAGS = flags.FLAGS
failures = []
for args in json.loads(sys.stdin.read()):
    try:
        FLAGS(["binary"] + args)
        experiment_flags.model_kwargs(21)
        experiment_flags.crop_size()
        experiment_flags.eval_scales()
    except Exception as error:  # report every failure, not only the first
        failures.append([args, repr(error)])
    FLAGS.unparse_flags()
print(json.dumps(failures))
"""


@pytest.mark.parametrize(
    "binary", [b for b in BINARIES if os.path.exists(os.path.join(REPO_ROOT, "deeplab", f"{b}.py"))]
)
def test_every_flagfile_and_row_parses_with_the_binary(binary):
    arg_lists = [[f"--flagfile={f}"] for f in paper_tables.all_flagfiles()]
    arg_lists += [list(row.args()) for _, row in all_rows()]
    result = harness.run("-c", _PARSE_SCRIPT, f"deeplab.{binary}", input=json.dumps(arg_lists))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------------------------------------
# The paper's numbers.
# ------------------------------------------------------------------------------------------------


def parse_paper_tables(text):
    """{table number: {row key: mIOU}} from PAPER_TABLES.md (keys as paper_tables.Row.key)."""
    tables = {}
    parts = re.split(r"^## Table (\d+):[^\n]*$", text, flags=re.M)
    for number, body in zip(parts[1::2], parts[2::2]):
        body = re.split(r"^## ", body, flags=re.M)[0]
        lines = [line for line in body.splitlines() if line.startswith("|")]
        entries = {}
        if not lines:  # Tables 7 and 13 are sentences: "DeepLabv3 85.7 (...)".
            for name, value in re.findall(r"^(DeepLabv3[\w-]*) (\d+\.\d+)", body, flags=re.M):
                entries[name] = float(value)
        else:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            header, rows = cells[0], cells[2:]
            if header[0] in ("OS", "batch", "replicas"):  # one mIOU row under a header row
                miou = next(r for r in rows if r[0] == "mIOU")
                entries = {h: float(v) for h, v in zip(header[1:], miou[1:])}
            elif header[1:] == ["block4", "block5", "block6", "block7"]:  # grids
                for row in rows:
                    for column, cell in zip(header[1:], row[1:]):
                        entries[f"{row[0]} | {column}"] = float(cell.split()[0])
            else:  # one row per setting, mIOU last ("77.21 (best; ...)")
                assert header[-1] == "mIOU", header
                for row in rows:
                    entries[" | ".join(row[:-1])] = float(row[-1].split()[0])
        tables[int(number)] = entries
    return tables


@pytest.mark.skipif(
    not os.path.exists(PAPER_TABLES_MD),
    reason=f"{PAPER_TABLES_MD} (the transcription of the paper) is not here",
)
def test_every_row_of_the_paper_has_a_definition_with_the_papers_number():
    with open(PAPER_TABLES_MD, encoding="utf-8") as f:
        paper = parse_paper_tables(f.read())
    assert set(REPRODUCED_TABLES) <= set(paper)
    for number in REPRODUCED_TABLES:
        ours = {row.key: row.paper_miou for row in paper_tables.TABLES[number].rows}
        assert ours == paper[number], f"Table {number}"
    assert sum(len(paper[n]) for n in REPRODUCED_TABLES) == 75


def test_paper_numbers_spot_checks():
    """A few numbers typed from the paper independently of PAPER_TABLES.md."""
    values = {(t.number, r.key): r.paper_miou for t, r in all_rows()}
    assert values[(1, "256")] == 20.29
    assert values[(3, "(1, 2, 1) | block7")] == 76.66
    assert values[(6, "OS 8 + MS + Flip, COCO-pretrained")] == 82.70
    assert values[(7, "DeepLabv3")] == 85.7
    assert values[(10, "16 | 8")] == 78.51
    assert values[(11, "32")] == 76.69
    assert values[(13, "DeepLabv3")] == 81.3


# ------------------------------------------------------------------------------------------------
# Each row's flags say what its label says.
# ------------------------------------------------------------------------------------------------


def values_of(row):
    """{setting: value} of a row's config (its flagfile's with its overrides applied)."""
    return experiment.setting_values(PLANNER.row_config(row))


def ints(values):
    return tuple(int(v) for v in values)


def eval_setting(values):
    """(evaluation output stride, scales, flip) of resolved flags."""
    return (
        values["eval_output_stride"] or values["output_stride"],
        tuple(float(s) for s in values["eval_scales"]),
        values["eval_flip"],
    )


def parse_eval_key(key, ms_scales):
    output_stride = int(re.search(r"OS (\d+)", key).group(1)) if "OS" in key else 8
    scales = ms_scales if "MS" in key else (1.0,)
    return output_stride, scales, "Flip" in key


def test_voc_rows_share_the_papers_protocol():
    for table, row in all_rows():
        values = values_of(row)
        if table.number in (12, 13):
            assert values["dataset_dir"] == "data/cityscapes" and values["num_classes"] == 19
            assert ints(values["crop_size"]) == (769, 769) and values["training_steps"] == 90000
            continue
        assert values["dataset_dir"] == "data/voc2012_trainaug"
        assert values["num_classes"] == 21 and values["training_steps"] == 30000
        assert values["eval_split"] == "val" and values["batch_norm_momentum"] == 0.9997
        assert (values["min_scale_factor"], values["max_scale_factor"]) == (0.5, 2.0)
        assert values["random_flip"] and values["weight_decay"] == 1e-4
        assert values["learning_power"] == 0.9 and values["momentum"] == 0.9
        # The ImageNet weights are those of the row's backbone.
        assert f"/{values['backbone']}_weights" in values["imagenet_weights"]
        if table.number == 7 or row.key.endswith("COCO-pretrained"):
            continue  # the chained stages: test_test_set_recipes_and_the_chain_of_stages
        assert values["train_split"] == "trainaug" and values["base_learning_rate"] == 0.007
        assert not values["init_checkpoint"]
        assert values["freeze_batch_norm"] == (table.number == 8 and row.key == "513 | yes | no")


def test_table_1_to_3_rows():
    for row in paper_tables.TABLES[1].rows:
        values = values_of(row)
        assert values["output_stride"] == int(row.key) and eval_setting(values)[0] == int(row.key)
        assert (values["backbone"], values["head"], values["num_cascaded_blocks"]) == (
            "resnet50",
            "cascade",
            3,
        )
        assert ints(values["multi_grid"]) == (1, 1, 1)
    for row in paper_tables.TABLES[2].rows:
        values = values_of(row)
        network, block = row.key.split(" | ")
        assert values["backbone"] == {"ResNet-50": "resnet50", "ResNet-101": "resnet101"}[network]
        assert values["num_cascaded_blocks"] == int(block[-1]) - 4
        assert (values["head"], values["output_stride"], ints(values["multi_grid"])) == (
            "cascade",
            16,
            (1, 1, 1),
        )
    for row in paper_tables.TABLES[3].rows:
        values = values_of(row)
        grid, block = row.key.split(" | ")
        assert ints(values["multi_grid"]) == tuple(int(v) for v in re.findall(r"\d", grid))
        assert values["num_cascaded_blocks"] == int(block[-1]) - 4
        assert (values["backbone"], values["head"], values["output_stride"]) == (
            "resnet101",
            "cascade",
            16,
        )
        assert eval_setting(values) == (16, (1.0,), False)


def test_inference_strategy_rows_of_tables_4_6_12():
    for number, ms_scales in (
        (4, PAPER_EVAL_SCALES),
        (6, PAPER_EVAL_SCALES),
        (12, (0.75, 1.0, 1.25)),
    ):
        for row in paper_tables.TABLES[number].rows:
            values = values_of(row)
            assert eval_setting(values) == parse_eval_key(row.key, ms_scales), row.key
            assert values["output_stride"] == 16  # trained at 16 in every row
    table4 = values_of(paper_tables.TABLES[4].rows[0])
    assert (table4["head"], table4["num_cascaded_blocks"], ints(table4["multi_grid"])) == (
        "cascade",
        3,
        (1, 2, 1),
    )
    for row in paper_tables.TABLES[6].rows:
        values = values_of(row)
        assert (
            values["head"],
            ints(values["multi_grid"]),
            ints(values["atrous_rates"]),
            values["image_pooling"],
        ) == ("aspp", (1, 2, 4), (6, 12, 18), True)


def test_table_5_rows():
    for row in paper_tables.TABLES[5].rows:
        values = values_of(row)
        grid, rates, pooling = row.key.split(" | ")
        assert ints(values["multi_grid"]) == tuple(int(v) for v in re.findall(r"\d+", grid))
        assert ints(values["atrous_rates"]) == tuple(int(v) for v in re.findall(r"\d+", rates))
        assert values["image_pooling"] == (pooling == "yes")
        assert (values["head"], values["num_cascaded_blocks"], values["output_stride"]) == (
            "aspp",
            0,
            16,
        )


def test_tables_8_9_10_rows():
    for row in paper_tables.TABLES[8].rows:
        values = values_of(row)
        crop, upsample, fine_tune_bn = row.key.split(" | ")
        assert ints(values["crop_size"]) == (int(crop), int(crop))
        assert values["upsample_logits"] == upsample.startswith("yes")
        assert values["freeze_batch_norm"] == (fine_tune_bn == "no")
        assert eval_setting(values) == (16, (1.0,), False)
    for row in paper_tables.TABLES[9].rows:
        values = values_of(row)
        assert values["batch_size"] == int(row.key)
        assert eval_setting(values) == (16, (1.0,), False)
    for row in paper_tables.TABLES[10].rows:
        values = values_of(row)
        train_os, eval_os = (int(v) for v in row.key.split(" | "))
        assert values["output_stride"] == train_os
        assert values["batch_size"] == {8: 6, 16: 16, 32: 24}[train_os]
        assert eval_setting(values) == (eval_os, (1.0,), False)


def test_table_11_rows_are_parameter_server_clusters():
    """Each row: N workers (+ ps) of asynchronous training of Table 5's final model."""
    final = values_of(paper_tables.TABLES[5].rows[-1])
    logdirs = set()
    for row in paper_tables.TABLES[11].rows:
        values = values_of(row)
        replicas = int(row.key)
        assert row.launch == (f"--workers={replicas}", f"--ps={max(1, replicas // 8)}")
        assert values["strategy"] == "parameter_server" and values["batch_size"] == 16
        assert values["training_steps"] == 30000 and eval_setting(values) == (16, (1.0,), False)
        assert "relative training time" in row.note
        # the model and protocol of Table 5's final model, except the strategy and the logdir
        differing = {k for k in values if values[k] != final[k]}
        assert differing == {"strategy", "logdir"}, differing
        logdirs.add(values["logdir"])
    assert len(logdirs) == 6


def test_test_set_recipes_and_the_chain_of_stages():
    logdirs = plan.logdirs_of_flagfiles(CONFIGS)
    coco = CONFIGS["experiments/coco_pretrain.flags"]
    assert coco.data.dataset_dir == "data/coco_voc" and coco.data.num_classes == 21
    table6 = values_of(paper_tables.TABLES[6].rows[-1])
    assert (
        plan.prerequisite(PLANNER.row_config(paper_tables.TABLES[6].rows[-1]), logdirs)
        == "experiments/coco_pretrain.flags"
    )
    assert table6["base_learning_rate"] == 0.0001 and table6["train_split"] == "trainaug"
    assert table6["output_stride"] == 16 and not table6["freeze_batch_norm"]

    stage2 = values_of(paper_tables.TABLES[7].rows[0])
    assert (
        plan.prerequisite(PLANNER.row_config(paper_tables.TABLES[7].rows[0]), logdirs)
        == "experiments/table6.flags"
    )
    assert (
        stage2["train_split"],
        stage2["output_stride"],
        stage2["freeze_batch_norm"],
        stage2["base_learning_rate"],
        stage2["training_steps"],
    ) == ("trainval", 8, True, 0.001, 30000)
    assert tuple(stage2["bootstrap_classes"]) == datasets_info.VOC_BOOTSTRAP_CLASSES
    assert stage2["bootstrap_repeat"] == 2
    assert eval_setting(stage2) == (8, PAPER_EVAL_SCALES, True)

    table13 = values_of(paper_tables.TABLES[13].rows[0])
    assert table13["train_split"] == "trainval_coarse"
    assert eval_setting(table13) == (4, CITYSCAPES_TEST_SCALES, True)
    for number in (7, 13):
        for row in paper_tables.TABLES[number].rows:
            assert row.split == "test"
            assert row.server_args or not row.reproducible
    jft = paper_tables.TABLES[7].rows[1]
    assert not jft.reproducible and "JFT" in jft.note


def test_each_logdir_holds_one_training_configuration():
    def run_key(row):  # the run of the row's flags (its cluster aside)
        return PLANNER.run_for(row.flagfile, row.overrides).key

    keys_by_logdir = {}
    for _, row in all_rows():
        if row.reproducible:
            values = values_of(row)
            key = run_key(row)
            keys_by_logdir.setdefault(os.path.normpath(values["logdir"]), set()).add(key)
    assert all(len(keys) == 1 for keys in keys_by_logdir.values()), keys_by_logdir
    # Shared runs: Table 5's final model is Table 6 rows 1-4, Table 8/9 best and Table 10 rows 2, 5.
    final = run_key(paper_tables.TABLES[5].rows[-1])
    shared = [
        (t.number, i)
        for t, r in all_rows()
        for i in [t.rows.index(r) + 1]
        if r.reproducible and run_key(r) == final
    ]
    assert shared == [(5, 5), (6, 1), (6, 2), (6, 3), (6, 4), (8, 1), (9, 4), (10, 2), (10, 5)]


def test_each_table_flagfile_encodes_its_best_row():
    for table in paper_tables.TABLES.values():
        best = max((r for r in table.rows if r.reproducible), key=lambda r: r.paper_miou)
        assert best.flagfile == table.best_flagfile and best.overrides == ()
        with open(os.path.join(REPO_ROOT, best.flagfile), encoding="utf-8") as f:
            header = f.read().split("\n--", 1)[0]
        assert f"Table {table.number}" in header and reproduction.paper_text(best) in header


def test_readme_rows_are_generated_from_the_row_definitions():
    with open(os.path.join(REPO_ROOT, "experiments", "README.md"), encoding="utf-8") as f:
        text = f.read()
    expected = reproduction.readme_with_rows(text, reproduction.readme_rows_markdown(CONFIGS))
    assert text == expected, "run: python -m deeplab.reproduce --update_readme"
    for table, row in all_rows():
        assert f"| {reproduction.paper_text(row)} |" in text


@pytest.mark.parametrize(
    "binary, listed, not_listed",
    [
        ("train", ["--base_learning_rate", "--crop_size", "--backbone", "--training_steps"], []),
        ("evaluate", ["--eval_output_stride", "--backbone", "--dataset_dir"], []),
        (
            "describe",
            ["--backbone", "--crop_size", "--output_stride", "--aspp_dropout"],
            ["--base_learning_rate", "--training_steps"],
        ),
    ],
)
def test_help_lists_the_experiment_flags_a_binary_reads(binary, listed, not_listed):
    out = harness.run(f"deeplab.{binary}", "--help", timeout=120)
    text = out.stdout + out.stderr
    names = {
        line.split(":")[0].strip().replace("[no]", "")
        for line in text.splitlines()
        if line.startswith("  --")
    }
    for flag in listed:
        assert flag in names, (binary, flag)
    for flag in not_listed:
        assert flag not in names, (binary, flag)
    # Help texts name files that exist.
    for path in re.findall(r"experiments/[\w.]+\.flags", text):
        assert os.path.exists(os.path.join(REPO_ROOT, path)), path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--min_scale_factor=-1"], "--min_scale_factor must be positive"),
        (["--min_scale_factor=2", "--max_scale_factor=1"], "must not exceed --max_scale_factor"),
        (["--momentum=-5"], r"--momentum must be in \[0, 1\)"),
        (["--shuffle_buffer=0"], "--shuffle_buffer must be at least 1"),
        (["--aspp_filters=0"], "--aspp_filters must be at least 1"),
        (["--atrous_rates=-1,2,3"], "--atrous_rates takes positive rates"),
        (["--multi_grid="], "--multi_grid takes three positive unit rates"),
        (["--crop_size=0"], "--crop_size takes S or H,W"),
        (["--batch_norm_momentum=1.5"], "--batch_norm_momentum must be in"),
        (["--training_steps=0"], "--training_steps must be at least 1"),
        (["--seed=-1"], r"--seed must be in \[0, 2\*\*32\)"),
        (["--class_weights=1,-2,1"], "--class_weights takes non-negative finite numbers"),
        (["--class_weights=1,x"], "--class_weights takes non-negative finite numbers"),
    ],
)
def test_bad_flag_values_are_rejected_when_parsed(args, message):
    """A bad value is refused before anything runs, with a line naming the flag (it used to be
    clamped, replaced or turned into a traceback deep in training)."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel

    from deeplab.config import flags as experiment_flags  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    with flagsaver.flagsaver():
        with pytest.raises(flags.IllegalFlagValueError, match=message):
            flags.FLAGS(["prog"] + args)


def test_boundary_band_marks_pixels_near_class_changes():
    """experiments/boundary_eval.py's trimap band: pixels within w of a label change, never
    ignore pixels (against a direct loop)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    sys.path.insert(0, os.path.join(REPO_ROOT, "experiments"))
    import boundary_eval  # pylint: disable=import-error,import-outside-toplevel

    label = np.zeros((9, 12), np.int32)
    label[:, 6:] = 1
    label[4, 2] = 2  # a one-pixel object: its 4 neighbours and itself are edges
    label[0, 0] = 255  # ignore: no boundary, never in the band
    band = boundary_eval.boundary_band(label, 2, 255)
    expected = np.zeros(label.shape, bool)
    for y in range(9):
        for x in range(12):
            near_column = min(abs(x - 5), abs(x - 6)) <= 2
            near_dot = (
                min(
                    abs(y - 4) + abs(x - 2),
                    abs(y - 4) + abs(x - 1),
                    abs(y - 4) + abs(x - 3),
                    abs(y - 3) + abs(x - 2),
                    abs(y - 5) + abs(x - 2),
                )
                <= 2
            )
            expected[y, x] = (near_column or near_dot) and label[y, x] != 255
    assert np.array_equal(band, expected)


def test_every_row_overrides_settings_of_the_experiment_config():
    """A row's overrides are fields of ExperimentConfig (so reproduce can tell training from
    evaluation by section), and its flags parse back to the same config."""
    from deeplab.config import experiment  # pylint: disable=import-outside-toplevel

    for _, row in all_rows():
        for name, value in row.overrides:
            section = experiment.ExperimentConfig.section_of(name)  # KeyError if not a setting
            parsed = experiment.from_flag_values(
                {
                    name: [str(v) for v in value]
                    if isinstance(value, tuple)
                    else [str(value)]
                    if name == "crop_size"
                    else value
                }
            )
            assert getattr(getattr(parsed, section), name) in (value, (value, value)), (row, name)
