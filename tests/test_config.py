"""deeplab.config.experiment: one typed config, one flag per field, read back as written."""

import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

import harness
from deeplab.common.errors import ConfigError
from deeplab.config import experiment
from deeplab.config import flags as experiment_flags
from deeplab.config.experiment import ExperimentConfig


def test_every_setting_is_one_flag_and_every_flag_one_setting():
    defined = {f.name for f in flags.FLAGS.flags_by_module_dict()[experiment_flags.__name__]}
    settings = set(experiment.setting_names())
    assert len(settings) == len(experiment.setting_names())  # names are unique across sections
    assert defined == settings, (defined - settings, settings - defined)


FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


# Settings added after the flags were generated (one field each): issue 33's.
ADDED_SINCE_5C22A1B = {"quantize_aware", "quantize_range_decay", "distill_from"}


def test_the_generated_flags_are_the_flags_before_generation():
    """The flags made from the config's fields (deeplab/config/flags.py) are those written by
    hand at 5c22a1b, before they were generated: same names, types, defaults and choices, and
    a help text each (tests/fixtures/experiment_flags_5c22a1b.json, dumped from that code)."""
    with open(os.path.join(FIXTURES, "experiment_flags_5c22a1b.json"), encoding="utf-8") as f:
        before = {flag["name"]: flag for flag in json.load(f)["flags"]}
    now = {flag.name: flag for flag in experiment_flags.experiment_flag_objects()}
    assert set(now) - ADDED_SINCE_5C22A1B == set(before), (
        set(now) - set(before),
        set(before) - set(now),
    )
    for name, old in before.items():
        flag = now[name]
        assert flag.flag_type() == old["type"], name
        assert flag.default == old["default"] and flag.default_as_str == old["default_as_str"], name
        assert flag.help.strip(), name
        assert list(getattr(flag.parser, "enum_values", None) or []) == old.get("choices", []), name


def test_a_bad_value_is_one_line_naming_the_flag_when_parsed_and_when_built():
    """One check per setting: the flag's validator (parse time) and the config (built from the
    Python API, a recorded config.json or overrides) give the same rule."""
    with flagsaver.flagsaver():
        with pytest.raises(
            flags.IllegalFlagValueError, match=r"--aspp_dropout must be in \[0, 1\)"
        ):
            flags.FLAGS(["prog", "--aspp_dropout=1.5"])
    with pytest.raises(ConfigError, match=r"^--aspp_dropout must be in \[0, 1\), got 1.5$"):
        ExperimentConfig.create(aspp_dropout=1.5)
    with pytest.raises(ConfigError, match=r"^--crop_size takes S or H,W .*, got 0,0$"):
        experiment.with_overrides(ExperimentConfig(), {"crop_size": 0})
    with pytest.raises(ConfigError, match="--min_scale_factor must not exceed --max_scale_factor"):
        ExperimentConfig.create(min_scale_factor=2.0, max_scale_factor=1.0)
    with pytest.raises(ConfigError, match="--eval_scales takes positive scales"):
        ExperimentConfig.from_dict({"eval": {"eval_scales": [0.5, -1]}})


def test_defaults_are_the_flags_defaults():
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog"])
        assert experiment_flags.experiment_config() == ExperimentConfig()


def test_flags_fill_every_section_and_parse_lists():
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(
            [
                "prog",
                "--crop_size=321",
                "--multi_grid=1,1,1",
                "--eval_scales=0.5,1",
                "--eval_tile_size=97",
                "--class_weights=1,2",
                "--logdir=runs/x",
                "--noimage_pooling",
                "--nodecoder_separable_conv",
            ]
        )
        config = experiment_flags.experiment_config()
    assert config.data.crop_size == (321, 321) and config.model.multi_grid == (1, 1, 1)
    assert config.eval.eval_scales == (0.5, 1.0) and config.eval.eval_tile_size == (97, 97)
    assert config.train.class_weights == (1.0, 2.0) and config.train.logdir == "runs/x"
    kwargs = config.model.build_kwargs(21, output_stride=8)
    assert kwargs["decoder_separable"] is False and kwargs["image_pooling"] is False
    assert kwargs["num_classes"] == 21 and kwargs["output_stride"] == 8


def test_recorded_config_is_the_base_and_the_command_line_wins():
    recorded = ExperimentConfig.create(dataset_dir="data/x", eval_split="test", eval_limit=3)
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog", "--eval_limit=0"])
        config = experiment_flags.experiment_config(recorded)
    assert config.data.dataset_dir == "data/x" and config.eval.eval_split == "test"
    assert config.eval.eval_limit == 0


def test_json_round_trip_and_the_pre_section_layout():
    config = ExperimentConfig.create(
        dataset_dir="d",
        crop_size=(33, 41),
        atrous_rates=(),
        eval_scales=(0.75, 1.0),
        training_steps=7,
    )
    back = ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config
    # config.json of a run made before the sections: one flat "train" dict with "model" kwargs.
    old = {
        "train": {
            "dataset_dir": "d",
            "crop_size": [33, 41],
            "training_steps": 7,
            "eval_scales": [0.75, 1.0],
            "eval_split": "val",
            "model": {"backbone": "resnet14_tiny", "decoder_separable": False, "atrous_rates": []},
        },
        "model": {"name": "deeplabv3"},
        "num_classes": 3,
    }
    read = ExperimentConfig.from_dict(old)
    assert read.data.crop_size == (33, 41) and read.train.training_steps == 7
    assert read.model.backbone == "resnet14_tiny" and read.model.decoder_separable_conv is False


def test_replace_puts_each_setting_in_its_section_and_refuses_unknown_names():
    config = ExperimentConfig().replace(batch_size=4, eval_flip=True, backbone="resnet50")
    assert (config.train.batch_size, config.eval.eval_flip, config.model.backbone) == (
        4,
        True,
        "resnet50",
    )
    assert ExperimentConfig.section_of("crop_size") == "data"
    with pytest.raises(KeyError, match="learning_rate"):
        ExperimentConfig().replace(learning_rate=0.1)


def test_settings_that_cannot_change_weights_are_marked():
    """reproduce keys runs by the other settings: these must stay out of a run's identity."""
    marked = set(experiment.non_training_settings())
    assert set(experiment.setting_names("eval")) <= marked
    assert {"logdir", "log_steps", "save_checkpoint_steps", "fused_batch_norm"} <= marked
    assert not {"base_learning_rate", "crop_size", "seed", "backbone"} & marked


def test_the_data_section_names_make_train_dataset_arguments():
    """The trainer passes DataConfig.pipeline_kwargs() on as it is: every key is an argument."""
    import inspect  # pylint: disable=import-outside-toplevel

    from deeplab.data import input_pipeline  # pylint: disable=import-outside-toplevel

    parameters = inspect.signature(input_pipeline.make_train_dataset).parameters
    kwargs = ExperimentConfig.create(crop_size=(33, 41), random_flip=False).data.pipeline_kwargs()
    assert set(kwargs) <= set(parameters)
    assert kwargs["crop_size"] == (33, 41) and kwargs["flip"] is False


def test_overrides_take_the_values_a_row_or_a_command_line_writes():
    """A paper-table row's overrides (``paper_tables.settings``) and a parsed command line's
    values become the fields' types, as their flags would (``experiment.with_overrides``)."""
    base = ExperimentConfig.create(logdir="runs/x")
    config = experiment.with_overrides(
        base,
        {
            "crop_size": 321,
            "multi_grid": ["1", "1", "1"],
            "eval_scales": "0.5, 1",
            "base_learning_rate": 1,
            "class_weights": "median_frequency",
            "eval_tile_size": (),
            "image_pooling": False,
        },
    )
    assert config.data.crop_size == (321, 321) and config.model.multi_grid == (1, 1, 1)
    assert config.eval.eval_scales == (0.5, 1.0) and config.eval.eval_tile_size is None
    assert isinstance(config.train.base_learning_rate, float)
    assert config.train.class_weights == ("median_frequency",)
    assert config.model.image_pooling is False and config.train.logdir == "runs/x"
    assert base.data.crop_size == (513, 513)  # the base is left as it was
    values = experiment.setting_values(config)
    assert values["crop_size"] == (321, 321) and len(values) == len(experiment.setting_names())
    with pytest.raises(KeyError, match="results_dir"):
        experiment.with_overrides(base, (("results_dir", "x"),))


def test_config_of_args_reads_a_command_line_apart_from_this_process_flags():
    """deeplab.reproduce reads the paper's flagfiles into configs with a private copy of the
    experiment flags: its own flags are neither read nor changed."""
    before = experiment_flags.FLAGS["crop_size"].value
    config = experiment_flags.config_of_args(["--crop_size=321", "--noimage_pooling"])
    assert config.data.crop_size == (321, 321) and config.model.image_pooling is False
    assert config.train.training_steps == 30000  # a default, whatever this process parsed
    assert experiment_flags.FLAGS["crop_size"].value == before
    with pytest.raises(ValueError, match="results_dir"):
        experiment_flags.config_of_args(["--results_dir=x"])
    with pytest.raises(ValueError, match="crop_size"):
        experiment_flags.config_of_args(["--crop_size=0"])  # the flags' validators run


def test_the_data_section_makes_the_parser_and_the_reader():
    """The trainer builds input_pipeline.Parser from parser_kwargs() and passes reader_kwargs()
    to read_train_dataset: every key is an argument, and the two make pipeline_kwargs()."""
    import inspect  # pylint: disable=import-outside-toplevel

    from deeplab.data import input_pipeline  # pylint: disable=import-outside-toplevel

    data = ExperimentConfig.create(crop_size=(33, 41), min_scale_factor=0.75).data
    parser = input_pipeline.Parser(**data.parser_kwargs())
    assert parser.crop_size == (33, 41) and parser.min_scale == 0.75 and parser.flip is True
    reader = inspect.signature(input_pipeline.read_train_dataset).parameters
    assert set(data.reader_kwargs()) <= set(reader)
    assert data.pipeline_kwargs() == {**data.parser_kwargs(), **data.reader_kwargs()}


def test_the_eval_section_makes_the_inference_options():
    """EvalConfig.inference_options() is the one InferenceOptions of the eval flags, and
    evaluate_kwargs() names evaluate_checkpoint's arguments, options among them."""
    import inspect  # pylint: disable=import-outside-toplevel

    from deeplab.common.inference_options import InferenceOptions  # pylint: disable=import-outside-toplevel
    from deeplab.evaluation import evaluator  # pylint: disable=import-outside-toplevel

    config = ExperimentConfig.create(
        dataset_dir="d",
        eval_output_stride=8,
        eval_scales=(0.75, 1.0),
        eval_flip=True,
        eval_tile_size=(97, 97),
        eval_pad_to=(513, 513),
    )
    options = config.eval.inference_options()
    assert options == InferenceOptions(
        scales=(0.75, 1.0), flip=True, tile_size=97, output_stride=8, pad_to=513
    )
    kwargs = config.eval.evaluate_kwargs(config.data)
    parameters = inspect.signature(evaluator.evaluate_checkpoint).parameters
    assert set(kwargs) - {"dataset_dir"} <= set(parameters) and kwargs["options"] == options
    settings = evaluator.EvalSettings.from_config(config)
    assert settings.options == options and settings.split == "val" and settings.limit is None
    assert ExperimentConfig().eval.inference_options().is_default


BINARY_FLAGS = """
import importlib, json, sys
from absl import flags
module = importlib.import_module("deeplab." + sys.argv[1])
if hasattr(module, "define_flags"):
    module.define_flags()
print(json.dumps({
    f.name: [f.flag_type(), f.default_as_str]
    for name, defined in flags.FLAGS.flags_by_module_dict().items()
    if not name.startswith("absl")
    for f in defined
}))
"""


def test_every_binary_defines_the_flags_it_defined_before_generation():
    """Each binary's flags (its own and the experiment flags it imports): the names, types and
    defaults of 5c22a1b (tests/fixtures/binary_flags_5c22a1b.json), so every command line and
    flagfile reads as before."""
    with open(os.path.join(FIXTURES, "binary_flags_5c22a1b.json"), encoding="utf-8") as f:
        before = json.load(f)
    for binary, flags_before in before.items():
        result = harness.run("-c", BINARY_FLAGS, binary, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        flags_now = json.loads(result.stdout.splitlines()[-1])
        # A binary that defined the experiment flags defines the new ones too.
        if "aspp_dropout" in flags_before:
            assert ADDED_SINCE_5C22A1B <= set(flags_now), binary
        assert {
            name: value for name, value in flags_now.items() if name not in ADDED_SINCE_5C22A1B
        } == flags_before, binary
