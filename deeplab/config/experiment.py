"""The experiment configuration: one typed record of a run's whole recipe.

:class:`ExperimentConfig` has four sections, :class:`DataConfig`, :class:`ModelConfig`,
:class:`TrainConfig` and :class:`EvalConfig`. Every field is named after the command-line flag
that sets it (``deeplab/config/flags.py``), so the flags fill it in one loop
(:func:`from_flags`), a paper-table row is a set of field overrides
(``deeplab/config/paper_tables.py``), and ``deeplab.reproduce`` knows which settings belong to
evaluation from the section they live in. Adding a setting is one flag definition plus one
field here.

A training run writes the resolved configuration to ``<logdir>/config.json`` at every start
(``deeplab.logdir.run_record``); :meth:`ExperimentConfig.from_dict` reads it back, so
``deeplab.evaluate --logdir=...`` can evaluate a run with the dataset and settings it recorded.

Imports nothing but the standard library and :mod:`deeplab.common.inference_options`.
"""

import dataclasses

from deeplab.common.inference_options import InferenceOptions

# ---- how a flag's parsed value becomes a field value (fields name them in their metadata)


def _ints(values):
    return tuple(int(v) for v in values)


def _floats(values):
    return tuple(float(v) for v in values)


def _strings(values):
    return tuple(str(v) for v in values)


def _class_weights(values):
    """--class_weights: one number per class, or one rule name ("median_frequency",
    "inverse_sqrt"; deeplab/data/class_weights.py) kept as a 1-tuple of that string."""
    values = tuple(values)
    if len(values) == 1 and isinstance(values[0], str):
        try:
            float(values[0])
        except ValueError:
            return (values[0].strip(),)
    return _floats(values)


def _size(values):
    """'S' or 'H,W' (a list of one or two numbers) as (height, width)."""
    sizes = _ints(values)
    return sizes * 2 if len(sizes) == 1 else sizes


def _optional_size(values):
    """--eval_tile_size: empty (None: whole images) or a size."""
    values = [v for v in values if str(v).strip()]
    return _size(values) if values else None


def _field(default, parse=None, *, weights=True):
    """A config field. ``parse`` turns the flag's value (e.g. a list of strings) into it;
    ``weights=False`` marks a training setting that cannot change the trained weights (where
    files go, how often to log, which kernel runs): ``deeplab.reproduce`` leaves those out of
    a run's identity, with every setting of the eval section."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return dataclasses.field(default=default, metadata={"parse": parse, "weights": weights})


# The largest random scale of a training image (--min/max_scale_factor): finite, and at most
# 16x (256x the pixels); a scale of inf (or 1e6) makes the scaled image's shape overflow before
# any crop is taken.
MAX_SCALE_FACTOR = 16.0


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how training batches are drawn (Sec. 4.1)."""

    dataset_dir: str = _field(None)
    train_split: str = _field("train")
    num_classes: int = _field(0)
    crop_size: tuple = _field((513, 513), _size)
    min_scale_factor: float = _field(0.5)
    max_scale_factor: float = _field(2.0)
    scale_factor_step: float = _field(0.25)
    random_flip: bool = _field(True)
    bootstrap_classes: tuple = _field((), _strings)
    bootstrap_repeat: int = _field(1)
    shuffle_buffer: int = _field(1024)
    build_synthetic_if_missing: bool = _field(False, weights=False)
    synthetic_image_size: tuple = _field((96, 96), _size)
    synthetic_num_train: int = _field(400)
    synthetic_num_val: int = _field(100)
    synthetic_num_classes: int = _field(5)

    # The keyword of ``deeplab.data.input_pipeline.Parser`` / ``make_train_dataset`` for each
    # augmentation setting (the same where absent from this map).
    _PIPELINE_NAMES = {
        "min_scale_factor": "min_scale",
        "max_scale_factor": "max_scale",
        "scale_factor_step": "scale_step",
        "random_flip": "flip",
    }
    # What the parser does to each example (Sec. 4.1), and how the reader samples them.
    _PARSER_SETTINGS = (
        "crop_size",
        "min_scale_factor",
        "max_scale_factor",
        "scale_factor_step",
        "random_flip",
    )
    _READER_SETTINGS = ("bootstrap_classes", "bootstrap_repeat", "shuffle_buffer")

    def parser_kwargs(self):
        """Keyword arguments of ``deeplab.data.input_pipeline.Parser`` that this section sets
        (crop, scales, flip)."""
        return {self._PIPELINE_NAMES.get(n, n): getattr(self, n) for n in self._PARSER_SETTINGS}

    def reader_kwargs(self):
        """Keyword arguments of ``deeplab.data.input_pipeline.read_train_dataset`` that this
        section sets (bootstrapping, shuffling)."""
        return {name: getattr(self, name) for name in self._READER_SETTINGS}

    def pipeline_kwargs(self):
        """Keyword arguments of ``deeplab.data.input_pipeline.make_train_dataset`` that this
        section sets: :meth:`parser_kwargs` and :meth:`reader_kwargs` together."""
        return {**self.parser_kwargs(), **self.reader_kwargs()}


@dataclasses.dataclass
class ModelConfig:
    """The network (``deeplab.build_model``'s arguments, without the class count)."""

    backbone: str = _field("resnet101")
    output_stride: int = _field(16)
    multi_grid: tuple = _field((1, 2, 4), _ints)
    atrous_rates: tuple = _field((6, 12, 18), _ints)
    image_pooling: bool = _field(True)
    head: str = _field("aspp")
    num_cascaded_blocks: int = _field(0)
    upsample_logits: bool = _field(True)
    batch_norm_momentum: float = _field(0.9997)
    backbone_batch_norm_momentum: float = _field(0.0)
    freeze_batch_norm: bool = _field(False)
    weight_decay: float = _field(1e-4)
    aspp_filters: int = _field(256)
    aspp_dropout: float = _field(0.1)
    decoder_output_stride: int = _field(0)
    decoder_separable_conv: bool = _field(True)
    backbone_padding: str = _field("symmetric")
    logits_init_stddev: float = _field(0.01)

    # build_model's keyword where it differs from the flag's name.
    _KWARG_NAMES = {"decoder_separable_conv": "decoder_separable"}

    def build_kwargs(self, num_classes, *, output_stride=None):
        """Keyword arguments of ``deeplab.build_model``."""
        kwargs = {
            self._KWARG_NAMES.get(f.name, f.name): getattr(self, f.name)
            for f in dataclasses.fields(self)
        }
        kwargs["num_classes"] = int(num_classes)
        if output_stride:
            kwargs["output_stride"] = int(output_stride)
        return kwargs

    @classmethod
    def from_build_kwargs(cls, kwargs):
        """The inverse of :meth:`build_kwargs` (``num_classes`` and unknown keys ignored)."""
        names = {cls._KWARG_NAMES.get(f.name, f.name): f.name for f in dataclasses.fields(cls)}
        values = {names[k]: _tuples(v) for k, v in kwargs.items() if k in names}
        return cls(**values)


@dataclasses.dataclass
class TrainConfig:
    """The optimization, its bookkeeping and where it runs (Sec. 4.1)."""

    logdir: str = _field(None, weights=False)
    training_steps: int = _field(30000)
    stop_at_step: int = _field(0)
    batch_size: int = _field(16)
    base_learning_rate: float = _field(0.007)
    learning_power: float = _field(0.9)
    end_learning_rate: float = _field(0.0)
    warmup_steps: int = _field(0)
    logits_bias_lr_multiplier: float = _field(2.0)
    momentum: float = _field(0.9)
    class_weights: tuple = _field((), _class_weights)
    top_k_percent_pixels: float = _field(1.0)
    hard_example_mining_step: int = _field(0)
    focal_gamma: float = _field(0.0)
    imagenet_weights: str = _field(None)
    init_checkpoint: str = _field(None)
    save_checkpoint_steps: int = _field(1000, weights=False)
    keep_checkpoints: int = _field(5, weights=False)
    log_steps: int = _field(20, weights=False)
    image_summary_steps: int = _field(500, weights=False)
    summary_images: int = _field(3, weights=False)
    mixed_precision: str = _field("none")
    recompute_through: str = _field("block2")
    jit_compile: bool = _field(False)
    fused_batch_norm: bool = _field(True, weights=False)
    fused_momentum: bool = _field(True, weights=False)
    strategy: str = _field("default")
    sync_batch_norm: bool = _field(False)
    tpu: str = _field(None, weights=False)
    seed: int = _field(0)
    deterministic: bool = _field(False)
    fresh_start: bool = _field(False, weights=False)
    evaluator_interval: float = _field(10.0, weights=False)
    evaluator_timeout: float = _field(3600.0, weights=False)


@dataclasses.dataclass
class EvalConfig:
    """How a checkpoint is evaluated (Sec. 4.2): none of it changes the trained weights."""

    checkpoint: str = _field(None)
    eval_split: str = _field("val")
    eval_after_training: bool = _field(False)
    eval_output_stride: int = _field(0)
    eval_scales: tuple = _field((1.0,), _floats)
    eval_flip: bool = _field(False)
    eval_limit: int = _field(0)
    eval_tile_size: tuple = _field(None, _optional_size)
    eval_tile_overlap: float = _field(0.25)
    eval_pad_to: tuple = _field(None, _optional_size)

    def inference_options(self):
        """The :class:`~deeplab.common.inference_options.InferenceOptions` of this section
        (output stride, scales, flip, windows, padding): what evaluate, visualize, predict and
        the export run with."""
        return InferenceOptions(
            scales=self.eval_scales,
            flip=self.eval_flip,
            tile_size=self.eval_tile_size,
            tile_overlap=self.eval_tile_overlap,
            output_stride=self.eval_output_stride or None,
            pad_to=self.eval_pad_to,
        )

    def evaluate_kwargs(self, data, *, num_classes=None):
        """Keyword arguments of ``deeplab.evaluation.evaluator.evaluate_checkpoint`` (and
        ``evaluator.EvalSettings``): the data, split and limit, and ``options``
        (:meth:`inference_options`)."""
        return {
            "dataset_dir": data.dataset_dir,
            "split": self.eval_split,
            "num_classes": num_classes or data.num_classes or None,
            "limit": self.eval_limit or None,
            "options": self.inference_options(),
        }


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass
class ExperimentConfig:
    """A run's whole recipe: data, model, train and eval sections."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    @staticmethod
    def section_of(name):
        """The section ("data", "model", "train", "eval") holding the setting ``name``."""
        for section, cls in SECTIONS.items():
            if name in {f.name for f in dataclasses.fields(cls)}:
                return section
        raise KeyError(f"no experiment setting is named {name!r}")

    def replace(self, **settings):
        """A copy with the named settings changed, each put into its own section; ``model`` may
        also be a dict of ``build_model`` keyword arguments (the rest of the model keeps its
        defaults) or a :class:`ModelConfig`."""
        sections = {name: dataclasses.replace(getattr(self, name)) for name in SECTIONS}
        model = settings.pop("model", None)
        if isinstance(model, dict):
            sections["model"] = ModelConfig.from_build_kwargs(model)
        elif model is not None:
            sections["model"] = model
        for name, value in settings.items():
            setattr(sections[self.section_of(name)], name, value)
        return ExperimentConfig(**sections)

    @classmethod
    def create(cls, **settings):
        """:meth:`replace` on the defaults: ``ExperimentConfig.create(dataset_dir=..., ...)``."""
        return cls().replace(**settings)

    def to_dict(self):
        """JSON-able ``{"data": {...}, "model": {...}, "train": {...}, "eval": {...}}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record):
        """Reads :meth:`to_dict`'s output back (lists become tuples). Also reads the
        ``config.json`` of runs recorded before the sections existed (one flat ``train`` dict
        whose ``model`` held ``build_model``'s keyword arguments)."""
        if "data" not in record and isinstance(record.get("train"), dict):
            flat = dict(record["train"])
            model = flat.pop("model", {}) or {}
            known = {f.name for c in SECTIONS.values() for f in dataclasses.fields(c)}
            settings = {k: _tuples(v) for k, v in flat.items() if k in known}
            return cls.create(model=model, **settings)
        sections = {}
        for name, section_cls in SECTIONS.items():
            values = record.get(name, {}) or {}
            fields = {f.name for f in dataclasses.fields(section_cls)}
            sections[name] = section_cls(
                **{k: _tuples(v) for k, v in values.items() if k in fields}
            )
        return cls(**sections)


def non_training_settings():
    """The settings that never make two training runs differ: the eval section's and the
    training settings marked ``weights=False``."""
    return tuple(
        f.name
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if name == "eval" or not f.metadata["weights"]
    )


def setting_names(section=None):
    """Every setting's name (= its flag's), or those of one section."""
    classes = [SECTIONS[section]] if section else SECTIONS.values()
    return tuple(f.name for cls in classes for f in dataclasses.fields(cls))


def from_flags(flag_values, recorded=None):
    """The :class:`ExperimentConfig` of parsed absl flags.

    Args:
      flag_values: ``absl.flags.FLAGS`` (parsed). A setting whose flag this binary does not
        define keeps its default (or its ``recorded`` value).
      recorded: an :class:`ExperimentConfig` read from a run's config.json, or None. Where
        given, its values stand wherever the command line did not name the flag.
    """
    values = {
        name: flag_values[name].value
        for name in setting_names()
        if name in flag_values and (recorded is None or flag_values[name].present)
    }
    return from_flag_values(values, recorded)


def from_flag_values(values, base=None):
    """The :class:`ExperimentConfig` of ``{flag name: parsed flag value}`` (e.g. the strings
    of a list flag); settings not in ``values`` keep their value in ``base`` (default: the
    defaults)."""
    base = base or ExperimentConfig()
    sections = {}
    for name, cls in SECTIONS.items():
        fields = {}
        for field in dataclasses.fields(cls):
            if field.name not in values:
                fields[field.name] = getattr(getattr(base, name), field.name)
                continue
            value = values[field.name]
            parse = field.metadata.get("parse")
            fields[field.name] = parse(value) if parse and value is not None else value
        sections[name] = cls(**fields)
    return ExperimentConfig(**sections)


def setting_values(config):
    """``{setting name: value}`` of every setting of ``config``, section by section."""
    return {
        field.name: getattr(getattr(config, name), field.name)
        for name, cls in SECTIONS.items()
        for field in dataclasses.fields(cls)
    }


def with_overrides(config, overrides):
    """``config`` with ``overrides`` applied: ``{setting: value}`` (or ``((setting, value),
    ...)``) as a paper-table row (``paper_tables.settings``) or a parsed command line writes
    them. A value becomes the field's as its flag's would (``crop_size=321`` -> (321, 321),
    ``multi_grid=(1, 2, 4)``, ``eval_scales="0.5,1"``, an int for a float setting -> float).

    Raises:
      KeyError: no setting has one of the names.
    """
    fields = {f.name: f for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    pairs = overrides.items() if isinstance(overrides, dict) else overrides
    values = {}
    for name, value in pairs:
        if name not in fields:
            raise KeyError(f"no experiment setting is named {name!r}")
        values[name] = _as_flag_value(fields[name], value)
    return from_flag_values(values, config)


def _as_flag_value(field, value):
    """``value`` in the form absl gives the field's flag (a list for a list flag)."""
    if value is None:
        return None
    if field.metadata.get("parse"):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",")] if value.strip() else []
        return list(value) if isinstance(value, (tuple, list)) else [value]
    if field.type in (int, float) and not isinstance(value, bool):
        return field.type(value)
    return value
