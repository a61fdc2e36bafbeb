"""deeplab.reproduce: shared training runs, chained stages, smoke mode, one table end to end."""

import hashlib
import json
import os

import pytest

import harness
from deeplab.common.errors import ConfigError
from deeplab.config import experiment
from deeplab.config import flags as config_flags
from deeplab.config import paper_tables
from deeplab.orchestration import plan
from deeplab.orchestration import reproduction


def config_args(args):
    """``args`` with relative flagfiles made absolute against the repository."""
    return [
        plan.flagfile_arg(a.split("=", 1)[1], harness.REPO) if a.startswith("--flagfile=") else a
        for a in args
    ]


def config_of_args(args):
    """The config of flags as the binaries parse them."""
    return config_flags.config_of_args(config_args(args))


# What deeplab.reproduce hands the planner: every flagfile's config, read as deeplab.train reads it.
CONFIGS = {f: config_of_args([f"--flagfile={f}"]) for f in paper_tables.all_flagfiles()}


def planner_of(overrides=(), **kwargs):
    return plan.Planner(CONFIGS, overrides, **kwargs)


def plan_tables(*numbers, smoke_dataset=None):
    planner = planner_of(smoke_dataset=smoke_dataset)
    planned = [plan.plan_table(paper_tables.TABLES[n], planner) for n in numbers]
    return planner, planned


def test_a_row_is_its_flagfiles_config_with_the_overrides_applied():
    base = CONFIGS["experiments/table5.flags"]
    config = plan.apply_settings(
        base, paper_tables.settings(multi_grid=(1, 1, 1), image_pooling=False)
    )
    assert config.model.multi_grid == (1, 1, 1) and config.model.image_pooling is False
    assert config.model.atrous_rates == (6, 12, 18) and config.train.logdir == "runs/table5"
    assert config.train.warmup_steps == 0  # not in the flagfile: the default
    assert base.model.image_pooling is True  # the flagfile's config is left as it was
    # The same config as the flags give, parsed by absl after the flagfile.
    assert config == config_of_args(
        ["--flagfile=experiments/table5.flags", "--multi_grid=1,1,1", "--noimage_pooling"]
    )
    # Values as the flags write them become the field's type.
    config = plan.apply_settings(
        base, paper_tables.settings(crop_size=321, eval_scales="0.5,1", base_learning_rate=1)
    )
    assert config.data.crop_size == (321, 321) and config.eval.eval_scales == (0.5, 1.0)
    assert config.train.base_learning_rate == 1.0
    with pytest.raises(ConfigError, match="results_dir"):
        plan.apply_settings(base, paper_tables.settings(results_dir="x"))


@pytest.mark.parametrize("smoke", [False, True])
def test_every_rows_config_is_the_config_of_its_command_line(smoke):
    """The planner applies a row's overrides (and --smoke's, and this command line's) to the
    flagfile's config; absl parsing the command it prints gives the same config."""
    planner = planner_of({"log_steps": 5}, smoke_dataset="/tmp/syn" if smoke else None)
    for table in paper_tables.TABLES.values():
        for row, run, config in plan.plan_table(table, planner):
            if run is None:
                continue
            settings, _ = planner.resolve(row.flagfile, row.overrides, row.launch)
            args = plan.command_args(row.flagfile, settings)
            assert config == config_of_args(args), (table.number, row.key)
            assert run.config == config_of_args(run.args), (table.number, row.key)


def test_training_key_ignores_evaluation_and_logging_flags():
    base = ["--flagfile=experiments/table5.flags"]
    key = plan.training_key(config_of_args(base))
    for extra in (
        "--eval_output_stride=8",
        "--eval_flip",
        "--logdir=elsewhere",
        "--log_steps=7",
        "--eval_scales=0.5,1",
    ):
        assert plan.training_key(config_of_args(base + [extra])) == key
    for extra in ("--output_stride=8", "--batch_size=8", "--noimage_pooling", "--crop_size=321"):
        assert plan.training_key(config_of_args(base + [extra])) != key
    # The same value spelled differently is one configuration.
    assert plan.training_key(config_of_args(base + ["--base_learning_rate=7e-3"])) == key
    assert plan.training_key(config_of_args(base + ["--crop_size=513,513"])) == key
    # Settings marked weights=False (experiment.py) are left out with the eval section.
    assert {"logdir", "log_steps"} <= plan.NON_TRAINING_SETTINGS
    assert set(experiment.setting_names("eval")) <= plan.NON_TRAINING_SETTINGS


def _key_of_flag_values(values, init_key=None, launch=()):
    """The key of a run as it was computed before rows became configs (at 8a13d62): a hash of
    the absl values of the flags of a row's command line."""

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return text

    def canonical(value):
        return float(f"{value:.10g}") if isinstance(value, float) else value

    relevant = {
        k: [str(canonical(number(x))) for x in v] if isinstance(v, list) else canonical(v)
        for k, v in values.items()
        if k not in plan.NON_TRAINING_SETTINGS
    }
    if init_key:
        relevant["init_checkpoint"] = f"run:{init_key}"
    if launch:
        relevant["launch_local"] = list(launch)
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@pytest.mark.parametrize("smoke", [False, True])
def test_training_key_is_the_key_runs_were_recorded_with(smoke):
    """A run's key hashes each setting as its flag is written (a square crop as one number), so
    finished runs recorded before rows became configs keep their key and are reused."""
    planner = planner_of({"log_steps": 5}, smoke_dataset="/tmp/syn" if smoke else None)
    for table in paper_tables.TABLES.values():
        plan.plan_table(table, planner)
    assert len(planner.runs) > 40
    for run in planner.runs.values():
        values = config_flags.parse_experiment_args(config_args(run.args))
        init_key = run.init.key if run.init else None
        assert run.key == _key_of_flag_values(values, init_key, run.launch), run.name


def test_rows_that_differ_only_in_evaluation_train_once():
    planner, _ = plan_tables(4)
    assert len(planner.runs) == 1
    planner, _ = plan_tables(12)
    assert len(planner.runs) == 1
    planner, _ = plan_tables(10)
    assert len(planner.runs) == 3  # train OS 8, 16, 32
    planner, _ = plan_tables(2, 3)
    assert len(planner.runs) == 8 + 20 - 4  # Table 3's MG (1, 1, 1) row is Table 2's ResNet-101
    planner, planned = plan_tables(5, 6, 8, 9)
    final = planned[0][-1][1]
    assert [run for _, run, _ in planned[1][:4]] == [final] * 4
    assert planned[2][0][1] is final and planned[3][-1][1] is final


def test_chained_stages_train_first():
    planner, planned = plan_tables(7)
    runs = list(planner.runs.values())
    assert [r.name for r in runs] == ["coco_pretrain", "table6", "table7"]
    assert runs[2].init is runs[1] and runs[1].init is runs[0] and runs[0].init is None
    (row, run, _), (jft, no_run, _) = planned[0]
    assert run is runs[2] and no_run is None and not jft.reproducible
    for run in runs:
        run.run_dir = f"/out/{run.name}"
    assert reproduction.train_command(runs[2])[-2:] == [
        "--logdir=/out/table7",
        "--init_checkpoint=/out/table6",
    ]


def test_smoke_shrinks_model_crop_and_data_but_keeps_the_row():
    assert [plan.smoke_crop(c) for c in (513, 321, 769)] == [33, 21, 49]
    planner, planned = plan_tables(8, 7, smoke_dataset="/tmp/syn")
    crops = sorted({run.config.data.crop_size for _, run, _ in planned[0]})
    assert crops == [(21, 21), (33, 33)]
    assert all(
        "--crop_size=33" in run.args or "--crop_size=21" in run.args
        for run in planner.runs.values()
    )
    assert len({run.key for _, run, _ in planned[0]}) == 4  # the four Table 8 rows stay distinct
    for _, run, config in planned[0]:
        assert run.config.model.backbone == "resnet14_tiny"
        assert run.config.train.imagenet_weights == ""
        assert run.config.data.dataset_dir == "/tmp/syn" and run.config.train.training_steps == 3
        assert config.eval.eval_output_stride == 16
    stage2 = planned[1][0][1]
    assert stage2.config.data.bootstrap_classes == ("shape_1",)
    assert stage2.config.model.freeze_batch_norm
    assert stage2.config.model.output_stride == 8 and stage2.init.name == "table6"


def test_dry_run_prints_every_command_in_order(tmp_path, library_log):
    planner = planner_of()
    results = reproduction.reproduce(
        paper_tables.TABLES[6],
        output_dir=str(tmp_path),
        planner=planner,
        dry_run=True,
    )
    lines = library_log()
    trains = [l for l in lines if l.startswith("python -m deeplab.train")]
    evals = [l for l in lines if l.startswith("python -m deeplab.evaluate")]
    assert len(trains) == 3 and len(evals) == 5
    assert "coco_pretrain.flags" in trains[1] and "--init_checkpoint=" in trains[2]
    assert all("--eval_output_stride=8" in e for e in evals[1:4])
    assert "table5.flags" in evals[0] and "table6.flags" in evals[4]
    assert [r["ours"] for r in results] == [None] * 5
    assert not os.listdir(tmp_path)  # nothing ran


def training_lines(lines):
    return [
        l
        for l in lines
        if l.startswith(("python -m deeplab.train", "python -m deeplab.launch_local"))
    ]


@pytest.mark.parametrize("number", sorted(paper_tables.TABLES))
@pytest.mark.parametrize("smoke", [False, True])
def test_dry_run_names_each_run_folder_once_directly_under_the_reproduce_dir(
    tmp_path, number, smoke, library_log
):
    """Rows with their own --logdir (Tables 1-3, 5, 8) and chained stages (Tables 6, 7): the
    run's folder replaces the row's --logdir and --init_checkpoint, it is not appended."""
    root = tmp_path / "runs" / "reproduce"
    planner = planner_of({"log_steps": 5}, smoke_dataset=str(root / "synthetic") if smoke else None)
    reproduction.reproduce(
        paper_tables.TABLES[number],
        output_dir=str(root),
        planner=planner,
        dry_run=True,
    )
    lines = library_log()
    trains = training_lines(lines)
    assert len(trains) == len(planner.runs) > 0
    run_dirs = []
    for line in trains:
        logdirs = [a for a in line.split() if a.startswith("--logdir=")]
        assert len(logdirs) == 1, line
        assert line.split().count("--log_steps=5") == 1
        assert len([a for a in line.split() if a.startswith("--init_checkpoint=")]) <= 1, line
        run_dirs.append(logdirs[0][len("--logdir=") :])
    assert all(os.path.dirname(d) == str(root) for d in run_dirs), run_dirs
    assert len(set(run_dirs)) == len(run_dirs)  # one folder per run
    for line in lines:
        assert "runs/reproduce/runs/" not in line, line
        if line.startswith(("python -m deeplab.evaluate", "python -m deeplab.visualize")):
            assert "--logdir=" not in line, line
            assert len([a for a in line.split() if a.startswith("--checkpoint=")]) == 1, line


@pytest.mark.slow
def test_binary_dry_run_prints_one_logdir_per_training_command(tmp_path):
    """The default --reproduce_dir (runs/reproduce) holds the run folders themselves; a --logdir
    on the command line is ignored (with a warning), not appended to every row."""
    for flags in ([], ["--logdir=elsewhere"]):
        result = harness.run("deeplab.reproduce", "--table=6", "--dry_run", *flags, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        trains = training_lines(result.stdout.splitlines())
        assert len(trains) == 3
        for line in trains:
            assert line.count("--logdir=") == 1, line
        root = os.path.join(str(tmp_path), "runs", "reproduce")
        assert trains[2].split()[-2:] == [
            f"--logdir={root}/table6",
            f"--init_checkpoint={root}/coco_pretrain",
        ]
        assert "runs/reproduce/runs/" not in result.stdout
        assert ("ignoring --logdir" in result.stderr) == bool(flags)
        assert not os.listdir(tmp_path)  # nothing ran


@pytest.mark.slow
def test_smoke_note_comes_first(tmp_path):
    result = harness.run("deeplab.reproduce", "--table=6", "--dry_run", "--smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"# {reproduction.SMOKE_NOTE}" and "not the paper's setting" in lines[0]
    assert lines[1].startswith("# Table 6")
    plain = harness.run("deeplab.reproduce", "--table=6", "--dry_run", cwd=tmp_path)
    assert plain.stdout.count(reproduction.SMOKE_NOTE) == 0
    # The side-by-side table: the note under the title, before the header and the rows.
    table = paper_tables.TABLES[4]
    results = [{"row": row, "ours": 1.0} for row in table.rows]
    text = reproduction.format_side_by_side(table, results, smoke=True).splitlines()
    assert text[0].startswith("Table 4") and text[1] == f"({reproduction.SMOKE_NOTE})"
    assert text[2].split()[:2] == ["#", "row"] and len(text) == 3 + len(table.rows)
    assert reproduction.SMOKE_NOTE not in reproduction.format_side_by_side(table, results)


def test_run_folders_reuse_legacy_runs_and_avoid_reserved_and_taken_names(tmp_path):
    planner, _ = plan_tables(6)
    table6 = [run for run in planner.runs.values() if run.name == "table6"][0]
    legacy = tmp_path / "runs" / "table6"
    legacy.mkdir(parents=True)
    (legacy / "run.json").write_text(json.dumps({"key": table6.key, "complete": True}))
    assert reproduction.assign_run_dir(table6, str(tmp_path)) is True
    assert table6.run_dir == str(legacy)  # a finished run of the old layout is reused
    assert reproduction.assign_run_dir(table6, str(tmp_path), reuse=False) is False
    assert table6.run_dir == str(tmp_path / "table6")
    reproduction.assign_run_dir(
        table6, str(tmp_path), reuse=False, taken=[str(tmp_path / "table6")]
    )
    assert table6.run_dir == str(tmp_path / f"table6-{table6.key}")
    table6.config = table6.config.replace(logdir="runs/evals")
    reproduction.assign_run_dir(table6, str(tmp_path), reuse=False)
    assert table6.run_dir == str(tmp_path / f"evals-{table6.key}")


def run_folders(root):
    """The training run folders (those with a run record) of a --reproduce_dir."""
    return sorted(name for name in os.listdir(root) if (root / name / "run.json").exists())


@pytest.mark.parametrize("number", [4])
@pytest.mark.slow
def test_smoke_reproduces_a_table_end_to_end(tmp_path, number):
    """Train once (tiny model, synthetic data) and evaluate the four inference strategies."""
    result = harness.run(
        "deeplab.reproduce",
        f"--table={number}",
        "--smoke",
        f"--reproduce_dir={tmp_path}",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    table = paper_tables.TABLES[number]
    saved = json.loads((tmp_path / f"table{number}.json").read_text())
    assert saved["smoke"] is True and len(saved["rows"]) == len(table.rows)
    assert [r["paper_miou"] for r in saved["rows"]] == [r.paper_miou for r in table.rows]
    assert len({r["training_key"] for r in saved["rows"]}) == 1  # one training run
    assert run_folders(tmp_path) == ["table4"]  # directly in --reproduce_dir
    record = json.loads((tmp_path / "table4" / "run.json").read_text())
    assert record["complete"] is True

    settings = []
    for row in saved["rows"]:
        assert 0.0 <= row["ours"] <= 100.0
        results = json.loads(
            open(os.path.join(row["results_dir"], "results.json"), encoding="utf-8").read()
        )
        assert results["miou_percent"] == pytest.approx(row["ours"], abs=0.006)
        assert results["train_output_stride"] == 16 and results["num_images"] == 4
        settings.append((results["output_stride"], len(results["scales"]), results["flip"]))
    assert settings == [(16, 1, False), (8, 1, False), (8, 6, False), (8, 6, True)]
    # The side-by-side table: row, paper, ours; the smoke note first and under the title.
    printed = result.stdout
    assert printed.splitlines()[0] == f"# {reproduction.SMOKE_NOTE}"
    title = printed.index(f"Table {number}: {table.title}")
    assert printed.index(reproduction.SMOKE_NOTE, title) < printed.index(
        table.label(table.rows[0]), title
    )
    for row, saved_row in zip(table.rows, saved["rows"]):
        assert f"{table.label(row)}" in printed and f"{row.paper_miou:.2f}" in printed
        assert f"{saved_row['ours']:.2f}" in printed
    assert "| OS 8 + MS + Flip | 79.35 |" in (tmp_path / f"table{number}.md").read_text()


def test_table_11_rows_train_on_clusters_and_smoke_caps_the_workers():
    planner, planned = plan_tables(11)
    assert len(planner.runs) == 6  # the same flags, six different clusters
    (_, first, _), (_, last, _) = planned[0][0], planned[0][-1]
    assert first.launch == ("--workers=1", "--ps=1") and last.launch == ("--workers=32", "--ps=4")
    first.run_dir, last.run_dir = "/out/table11", "/out/table11_32replicas"
    command = reproduction.train_command(last)
    assert command[1:6] == ["-m", "deeplab.launch_local", "--workers=32", "--ps=4", "--"]
    assert command[-1] == "--logdir=/out/table11_32replicas"
    assert any(a.endswith("experiments/table11.flags") for a in command)

    planner = planner_of(smoke_dataset="/tmp/syn", smoke_max_workers=2)
    planned = plan.plan_table(paper_tables.TABLES[11], planner)
    assert [run.launch for _, run, _ in planned] == [("--workers=1", "--ps=1")] + [
        ("--workers=2", "--ps=1")
    ] * 5
    assert len(planner.runs) == 2  # rows with more workers share the capped run
    for _, run, _ in planned:
        assert run.config.train.strategy == "parameter_server"  # not smoke's --strategy=default
        assert run.config.model.backbone == "resnet14_tiny"
        assert run.config.train.training_steps == 3


@pytest.mark.slow
def test_smoke_table_11_trains_through_launch_local(tmp_path):
    """Two tiny parameter-server clusters (1 and 2 workers), six rows evaluated, times noted."""
    result = harness.run(
        "deeplab.reproduce",
        "--table=11",
        "--smoke",
        "--smoke_steps=4",
        f"--reproduce_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    saved = json.loads((tmp_path / "table11.json").read_text())
    assert [r["paper_miou"] for r in saved["rows"]] == [77.21, 77.15, 76.79, 77.02, 77.18, 76.69]
    assert len({r["training_key"] for r in saved["rows"]}) == 2
    assert run_folders(tmp_path) == ["table11", "table11_2replicas"]
    for row in saved["rows"]:
        assert 0.0 <= row["ours"] <= 100.0 and row["training_seconds"] > 0
        assert "ours: --workers=" in row["note"] and "relative" in row["note"]
    log = (tmp_path / "table11_2replicas" / "train.log").read_text()
    assert "ParameterServerStrategy" in log and "[worker:1] worker:1 serving" in log
    assert "[chief:0] Trained steps 0->4" in log
