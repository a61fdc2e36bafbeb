"""The experiment configuration: one typed record of a run's whole recipe, and the one
declaration of every setting.

:class:`ExperimentConfig` has four sections, :class:`DataConfig`, :class:`ModelConfig`,
:class:`TrainConfig` and :class:`EvalConfig`. A field is the only place a setting is declared:
its type (the annotation), default, help text, how its command-line value is parsed, its
validation (``check`` and the ``message`` naming what is allowed) and, where the library's
keyword differs from the setting's name, that keyword (``arg``). Everything else is derived:
``deeplab/config/flags.py`` defines one absl flag per field (same name, same help, a validator
from the same check), :meth:`ExperimentConfig.check` validates a config built any other way (the
Python API, a recorded config.json, a paper-table row), a paper-table row is a set of field
overrides (``deeplab/config/paper_tables.py``), and ``deeplab.reproduce`` knows which settings
belong to evaluation from the section they live in. Adding a setting is one field here plus the
code that uses it.

A training run writes the resolved configuration to ``<logdir>/config.json`` at every start
(``deeplab.logdir.run_record``); :meth:`ExperimentConfig.from_dict` reads it back, so a binary
given a run's ``--logdir`` starts from the settings it recorded.

Imports nothing but the standard library, the project's error types and
:mod:`deeplab.common.inference_options`.
"""

import dataclasses
import math

from deeplab.common.errors import ConfigError
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


# ---- checks of a field's value (after parsing); a check may raise TypeError / ValueError on a
# value of the wrong kind, which counts as failing it.


def _at_least(minimum):
    return lambda value: value >= minimum


def _fraction(value):
    return 0 <= value < 1


def _positive(values):
    return all(v > 0 for v in values)


def _sizes(values):
    return len(values) == 2 and _positive(values)


def _optional_sizes(values):
    return values is None or _sizes(values)


# The largest random scale of a training image (--min/max_scale_factor): finite, and at most
# 16x (256x the pixels); a scale of inf (or 1e6) makes the scaled image's shape overflow before
# any crop is taken.
MAX_SCALE_FACTOR = 16.0
_SCALE_FACTOR_MESSAGE = f"must be positive and at most {MAX_SCALE_FACTOR:g} (finite)"


def _scale_factor(value):
    return 0 < value <= MAX_SCALE_FACTOR  # also refuses NaN and inf


CLASS_WEIGHT_RULES = ("median_frequency", "inverse_sqrt")  # deeplab/data/class_weights.py
_CLASS_WEIGHTS_MESSAGE = (
    "takes non-negative finite numbers, one per class (empty: all 1), or one of "
    + ", ".join(CLASS_WEIGHT_RULES)
)


def _class_weights_ok(values):
    if len(values) == 1 and isinstance(values[0], str):
        return values[0] in CLASS_WEIGHT_RULES
    return all(v >= 0 and math.isfinite(v) for v in values)


def _field(
    default,
    parse=None,
    *,
    help,  # pylint: disable=redefined-builtin
    check=None,
    message=None,
    choices=None,
    flag_default=None,
    arg=None,
    pipeline=False,
    weights=True,
):
    """A setting.

    Args:
      default: its value when nothing sets it (tuples for sequences).
      parse: turns its flag's value (a list of strings for a tuple field) into the field's;
        None: the flag's value as it is (int, float, bool, str).
      help: the flag's help text.
      check: the value (parsed) is valid when ``check(value)`` is true; a value equal to a
        None default is always valid.
      message: what ``check`` wants, e.g. "must be in [0, 1)"; errors read
        ``--<name> <message>``.
      choices: the allowed strings (an enum flag).
      flag_default: the flag's default where it is not the default written as the flag's
        value (``crop_size``: "513" for (513, 513)).
      arg: the keyword of the library function the setting is handed to, where it differs
        from the setting's name (``random_flip`` -> ``make_train_dataset(flip=)``).
      pipeline: a data setting of the training input pipeline: "parser" (an argument of
        ``deeplab.data.input_pipeline.Parser``: what is done to each example) or "reader" (of
        ``read_train_dataset``: how examples are sampled); :meth:`DataConfig.parser_kwargs` /
        ``reader_kwargs`` hand it on.
      weights: False marks a training setting that cannot change the trained weights (where
        files go, how often to log, which kernel runs): ``deeplab.reproduce`` leaves those
        out of a run's identity, with every setting of the eval section.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    if (check is None) != (message is None):
        raise TypeError("a check needs its message, and a message its check")
    metadata = {
        "parse": parse,
        "help": help,
        "check": check,
        "message": message,
        "choices": tuple(choices) if choices else None,
        "flag_default": flag_default,
        "arg": arg,
        "pipeline": pipeline,
        "weights": weights,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how training batches are drawn (Sec. 4.1)."""

    dataset_dir: str = _field(
        None,
        help=(
            "Folder of TFRecord shards + dataset.json (datasets/*.py write it), or 'tfds:NAME' "
            "for a TensorFlow Datasets dataset."
        ),
    )
    train_split: str = _field(
        "train",
        help="Split to train on (e.g. train, trainaug, trainval).",
    )
    num_classes: int = _field(
        0,
        help=(
            "Number of classes; 0 takes it from dataset.json. A value that disagrees with "
            "dataset.json is an error."
        ),
        check=_at_least(0),
        message="must be >= 0 (0: from dataset.json)",
    )
    crop_size: tuple = _field(
        (513, 513),
        _size,
        help="Training crop: 'S' or 'H,W' (paper: 513; Cityscapes 769).",
        check=_sizes,
        message="takes S or H,W with positive sizes",
        flag_default=("513",),
        pipeline="parser",
    )
    min_scale_factor: float = _field(
        0.5,
        help="Smallest random scale of a training image (Sec. 4.1).",
        check=_scale_factor,
        message=_SCALE_FACTOR_MESSAGE,
        arg="min_scale",
        pipeline="parser",
    )
    max_scale_factor: float = _field(
        2.0,
        help="Largest random scale of a training image (Sec. 4.1).",
        check=_scale_factor,
        message=_SCALE_FACTOR_MESSAGE,
        arg="max_scale",
        pipeline="parser",
    )
    scale_factor_step: float = _field(
        0.25,
        help="Step between random scales; 0 = continuous.",
        check=_at_least(0),
        message="must be >= 0 (0: continuous scales)",
        arg="scale_step",
        pipeline="parser",
    )
    random_flip: bool = _field(
        True,
        help="Random left-right flip of training crops (Sec. 4.1).",
        arg="flip",
        pipeline="parser",
    )
    bootstrap_classes: tuple = _field(
        (),
        _strings,
        help=(
            "Hard-image bootstrapping (Sec. 4.3): class names or ids whose images are repeated "
            "in the training stream (paper: bicycle,chair,diningtable,pottedplant,sofa)."
        ),
        pipeline="reader",
    )
    bootstrap_repeat: int = _field(
        1,
        help="How many times a bootstrapped image appears.",
        check=_at_least(1),
        message="must be at least 1",
        pipeline="reader",
    )
    shuffle_buffer: int = _field(
        1024,
        help="Shuffle buffer of the training stream.",
        check=_at_least(1),
        message="must be at least 1",
        pipeline="reader",
    )
    build_synthetic_if_missing: bool = _field(
        False,
        help=(
            "Write the synthetic dataset to --dataset_dir if it has no dataset.json (the quick "
            "start)."
        ),
        weights=False,
    )
    synthetic_image_size: tuple = _field(
        (96, 96),
        _size,
        help="H,W of synthetic images.",
    )
    synthetic_num_train: int = _field(
        400,
        help="Synthetic training images.",
    )
    synthetic_num_val: int = _field(
        100,
        help="Synthetic validation images.",
    )
    synthetic_num_classes: int = _field(
        5,
        help="Synthetic classes (background included).",
    )

    def _pipeline(self, part):
        return {
            _arg(field): getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.metadata["pipeline"] == part
        }

    def parser_kwargs(self):
        """Keyword arguments of ``deeplab.data.input_pipeline.Parser`` that this section sets
        (crop, scales, flip: the fields marked ``pipeline="parser"``)."""
        return self._pipeline("parser")

    def reader_kwargs(self):
        """Keyword arguments of ``deeplab.data.input_pipeline.read_train_dataset`` that this
        section sets (bootstrapping, shuffling: ``pipeline="reader"``)."""
        return self._pipeline("reader")

    def pipeline_kwargs(self):
        """Keyword arguments of ``deeplab.data.input_pipeline.make_train_dataset`` that this
        section sets: :meth:`parser_kwargs` and :meth:`reader_kwargs` together (the fields marked
        ``pipeline``)."""
        return {**self.parser_kwargs(), **self.reader_kwargs()}


@dataclasses.dataclass
class ModelConfig:
    """The network (``deeplab.build_model``'s arguments, without the class count)."""

    backbone: str = _field(
        "resnet101",
        help=(
            "ResNet-v1 depth "
            "(resnet14_tiny: not in the paper; tests and quick start), or the atrous "
            "MobileNetV2 of the authors' mobile models (depth 1.0 / 0.5; "
            "deeplab.import_official)."
        ),
        choices=("resnet50", "resnet101", "resnet14_tiny", "mobilenet_v2", "mobilenet_v2_dm05"),
    )
    output_stride: int = _field(
        16,
        help="Training output stride, 4..256 (Sec. 3.1).",
    )
    multi_grid: tuple = _field(
        (1, 2, 4),
        _ints,
        help="Unit rates of block4..block7 (Sec. 3.2.1).",
        check=lambda v: len(v) == 3 and _positive(v),
        message="takes three positive unit rates, e.g. 1,2,4",
    )
    atrous_rates: tuple = _field(
        (6, 12, 18),
        _ints,
        help="ASPP rates at output stride 16; scaled by 16/output_stride (Sec. 3.3).",
        check=_positive,
        message=(
            "takes positive rates, e.g. 6,12,18 (empty: the 1x1 branch and image pooling "
            "only, the head of the authors' MobileNetV2 models)"
        ),
    )
    image_pooling: bool = _field(
        True,
        help="ASPP image-level features (Sec. 3.3).",
    )
    head: str = _field(
        "aspp",
        help="aspp (Sec. 3.3) or cascade (Sec. 3.2).",
        choices=("aspp", "cascade"),
    )
    num_cascaded_blocks: int = _field(
        0,
        help="Extra blocks 5..7 after block4 (Sec. 3.2).",
        check=lambda v: 0 <= v <= 3,
        message="must be in 0..3",
    )
    upsample_logits: bool = _field(
        True,
        help=(
            "Upsample logits to the label size; False takes the loss against the labels at the "
            "feature centres instead (Table 8 ablation)."
        ),
    )
    batch_norm_momentum: float = _field(
        0.9997,
        help=(
            "BN statistics decay of the head (ASPP, decoder) and of a ResNet backbone: the "
            "paper's and the authors' ASPP value, 0.9997."
        ),
        check=_fraction,
        message="must be in [0, 1)",
    )
    backbone_batch_norm_momentum: float = _field(
        0.0,
        help=(
            "The backbone's BN decay; 0: the authors' per backbone, 0.997 for MobileNetV2, "
            "--batch_norm_momentum for ResNet (their public code uses 0.95 there; "
            "CONVENTIONS.md)."
        ),
        check=_fraction,
        message="must be in [0, 1)",
    )
    freeze_batch_norm: bool = _field(
        False,
        help=(
            "BN normalizes with its moving statistics and never updates them; gamma and beta "
            "still train, as in the authors' code (second stage, Sec. 4.3)."
        ),
    )
    weight_decay: float = _field(
        0.0001,
        help="L2 weight decay on conv kernels.",
        check=_at_least(0),
        message="must be >= 0",
    )
    aspp_filters: int = _field(
        256,
        help="Channels of every ASPP branch.",
        check=_at_least(1),
        message="must be at least 1",
    )
    aspp_dropout: float = _field(
        0.1,
        help=(
            "Dropout rate after the ASPP projection, training only (the authors' code: 0.1; 0 "
            "turns it off)."
        ),
        check=_fraction,
        message="must be in [0, 1)",
    )
    decoder_output_stride: int = _field(
        0,
        help=(
            "0: DeepLabv3. 4 (or 8): the DeepLabv3+ decoder (Chen et al. 2018) fuses block1 "
            "(block2) features with the ASPP output; not in this paper."
        ),
    )
    decoder_separable_conv: bool = _field(
        True,
        help=(
            "The decoder's 3x3 convolutions are depthwise-separable (the authors' DeepLabv3+) "
            "or, with --nodecoder_separable_conv, plain."
        ),
        arg="decoder_separable",
    )
    backbone_padding: str = _field(
        "symmetric",
        help=(
            "MobileNetV2's stride-2 layers: symmetric (this project's "
            "geometry at every size) or same (TensorFlow's, as the authors' graphs; equal at "
            "odd sizes)."
        ),
        choices=("symmetric", "same"),
    )
    logits_init_stddev: float = _field(
        0.01,
        help=(
            "The new logits kernel starts from a truncated normal of this stddev (the authors' "
            "0.01); 0: Glorot uniform."
        ),
        check=_at_least(0),
        message="must be >= 0 (0: Glorot uniform)",
    )
    quantize_aware: bool = _field(
        False,
        help=(
            "Quantization-aware training: the forward pass rounds weights (per channel, BN "
            "folded) and activations to int8 as the int8 TFLite export does; fine-tune a float "
            "checkpoint with it (--init_checkpoint, --freeze_batch_norm) and export "
            "--quantize=int8 without calibration images."
        ),
    )
    quantize_range_decay: float = _field(
        0.99,
        help="--quantize_aware: decay of the moving averages that track activation ranges.",
        check=_fraction,
        message="must be in [0, 1)",
    )

    def build_kwargs(self, num_classes, *, output_stride=None):
        """Keyword arguments of ``deeplab.build_model`` (``deeplab.model.settings.ModelSettings``'
        names: a field's ``arg`` where it has one)."""
        kwargs = {_arg(field): getattr(self, field.name) for field in dataclasses.fields(self)}
        kwargs["num_classes"] = int(num_classes)
        if output_stride:
            kwargs["output_stride"] = int(output_stride)
        return kwargs

    @classmethod
    def from_build_kwargs(cls, kwargs):
        """The inverse of :meth:`build_kwargs` (``num_classes`` and unknown keys ignored)."""
        names = {_arg(field): field.name for field in dataclasses.fields(cls)}
        values = {names[k]: _tuples(v) for k, v in kwargs.items() if k in names}
        return cls(**values)


@dataclasses.dataclass
class TrainConfig:
    """The optimization, its bookkeeping and where it runs (Sec. 4.1)."""

    logdir: str = _field(
        None,
        help="Checkpoints and TensorBoard events of a training run.",
        weights=False,
    )
    training_steps: int = _field(
        30000,
        help="Training iterations (Sec. 4.1: 30K on VOC).",
        check=_at_least(1),
        message="must be at least 1",
    )
    stop_at_step: int = _field(
        0,
        help=(
            "Stop this process after this step and checkpoint it (0: at --training_steps). The "
            "learning-rate schedule still spans --training_steps; the same command without it "
            "resumes."
        ),
        check=_at_least(0),
        message="must be >= 0 (0: run the whole schedule)",
    )
    batch_size: int = _field(
        16,
        help="Global batch size (Sec. 4.1 / Table 9: 16).",
        check=_at_least(1),
        message="must be at least 1",
    )
    base_learning_rate: float = _field(
        0.007,
        help="Poly schedule base (Sec. 4.1: 0.007; stage 2: 0.001).",
        check=lambda v: v > 0,
        message="must be positive",
    )
    learning_power: float = _field(
        0.9,
        help="Poly schedule power (Sec. 4.1).",
        check=_at_least(0),
        message="must be >= 0",
    )
    end_learning_rate: float = _field(
        0.0,
        help="Learning rate reached at --training_steps.",
        check=_at_least(0),
        message="must be >= 0",
    )
    warmup_steps: int = _field(
        0,
        help="Linear warm-up steps before the poly decay.",
        check=_at_least(0),
        message="must be >= 0",
    )
    logits_bias_lr_multiplier: float = _field(
        2.0,
        help=(
            "The logits' bias trains at this multiple of the learning rate (the authors' "
            "train_utils.py: 2; 1 turns it off)."
        ),
        check=lambda v: v > 0,
        message="must be positive (1: off)",
    )
    momentum: float = _field(
        0.9,
        help="SGD momentum (Sec. 4.1).",
        check=_fraction,
        message="must be in [0, 1)",
    )
    class_weights: tuple = _field(
        (),
        _class_weights,
        help=(
            "Per-class loss weights: num_classes numbers, or a rule computed at the start of "
            "the run from the training split's labels: median_frequency (SegNet: median(freq) / "
            "freq(c)) or inverse_sqrt (its square root, milder); deeplab/data/class_weights.py. "
            "Empty: all 1."
        ),
        check=_class_weights_ok,
        message=_CLASS_WEIGHTS_MESSAGE,
    )
    top_k_percent_pixels: float = _field(
        1.0,
        help=(
            "Hard-pixel mining (the authors' code): only this share of the batch's pixels, "
            "those with the largest loss, enters the loss; 1.0: every pixel."
        ),
        check=lambda v: 0.0 < v <= 1.0,
        message="must be in (0, 1]",
    )
    hard_example_mining_step: int = _field(
        0,
        help=(
            "Warm-up of hard-pixel mining: the kept share falls linearly from 1.0 to "
            "--top_k_percent_pixels over this many steps (0: from the start)."
        ),
        check=_at_least(0),
        message="must be >= 0",
    )
    focal_gamma: float = _field(
        0.0,
        help=(
            "Focal loss (Lin et al. 2017): scale each pixel's cross-entropy by (1 - p_true) ** "
            "gamma; 0: plain cross-entropy. Class weights still apply."
        ),
        check=_at_least(0),
        message="must be >= 0",
    )
    imagenet_weights: str = _field(
        None,
        help=(
            "keras.applications ResNet50/101 ImageNet weight file (*_notop.h5 or .weights.h5) "
            "to initialize the backbone."
        ),
    )
    init_checkpoint: str = _field(
        None,
        help=(
            "Checkpoint (file prefix or logdir) to initialize from (stage 2, COCO -> VOC); the "
            "logits layer is skipped when num_classes differs."
        ),
    )
    distill_from: str = _field(
        None,
        help=(
            "Checkpoint (file prefix or logdir) of a model whose softmax is the training target "
            "instead of the labels (pixels with the ignore label stay out): fine-tuning that "
            "should reproduce a model, e.g. --quantize_aware from the float run itself."
        ),
    )
    save_checkpoint_steps: int = _field(
        1000,
        help="Checkpoint every N steps (and at the end).",
        check=_at_least(1),
        message="must be at least 1",
        weights=False,
    )
    keep_checkpoints: int = _field(
        5,
        help="Checkpoints kept in --logdir.",
        check=_at_least(1),
        message="must be at least 1",
        weights=False,
    )
    log_steps: int = _field(
        20,
        help="Console progress line and scalar summaries every N steps.",
        check=_at_least(1),
        message="must be at least 1",
        weights=False,
    )
    image_summary_steps: int = _field(
        500,
        help="Image summaries every N steps (0 = never).",
        check=_at_least(0),
        message="must be >= 0 (0: never)",
        weights=False,
    )
    summary_images: int = _field(
        3,
        help="Images shown in the TensorBoard image summaries.",
        check=_at_least(0),
        message="must be >= 0",
        weights=False,
    )
    mixed_precision: str = _field(
        "none",
        help="Compute dtype; loss and softmax stay float32.",
        choices=("none", "bfloat16", "float16"),
    )
    recompute_through: str = _field(
        "block2",
        help=(
            "Recompute the backbone up to this endpoint in the "
            "backward pass instead of keeping its activations (deeplab/training/recompute.py). "
            "block2 (default) cut peak training memory from 4.1-5.2 to 3.1 GiB at batch 8, "
            "321x321 (ResNet-101, 2 cores) for 4-8% more time per step; none keeps every "
            "activation."
        ),
        choices=("none", "stem", "block1", "block2"),
    )
    jit_compile: bool = _field(
        False,
        help=(
            "XLA-compile the train step. Off by default: on this project's 2-core CPU the quick "
            "start trained at 3.8 img/s with it vs 62 without (16x slower)."
        ),
    )
    fused_batch_norm: bool = _field(
        True,
        help=(
            "Batch norm trains with TensorFlow's fused kernel (deeplab/model/batch_norm.py); "
            "--nofused_batch_norm (or DEEPLAB_FUSED_BATCH_NORM=0) takes Keras' own."
        ),
        weights=False,
    )
    fused_momentum: bool = _field(
        True,
        help=(
            "The momentum update is one fused kernel per variable "
            "(deeplab/training/optimizers.py); --nofused_momentum (or DEEPLAB_FUSED_MOMENTUM=0) "
            "takes Keras' own update."
        ),
        weights=False,
    )
    strategy: str = _field(
        "default",
        help=("tf.distribute strategy."),
        choices=("default", "mirrored", "multi_worker_mirrored", "tpu", "parameter_server"),
    )
    sync_batch_norm: bool = _field(
        False,
        help="Synchronize BN statistics across replicas.",
    )
    tpu: str = _field(
        None,
        help="TPU name or address for --strategy=tpu.",
        weights=False,
    )
    seed: int = _field(
        0,
        help="Random seed (initialization, data order, augmentation).",
        check=lambda v: 0 <= v < 2**32,
        message="must be in [0, 2**32)",
    )
    deterministic: bool = _field(
        False,
        help=(
            "Deterministic data order and ops; a resumed run then continues the uninterrupted "
            "run's data stream exactly (kill and resume reproduces its weights on one machine). "
            "Slower input pipeline."
        ),
    )
    fresh_start: bool = _field(
        False,
        help=(
            "Train from step 0 even though --logdir holds checkpoints that cannot be read "
            "(without it such a logdir is an error; intact checkpoints are always resumed)."
        ),
        weights=False,
    )
    evaluator_interval: float = _field(
        10.0,
        help=("TF_CONFIG task 'evaluator': seconds between looks for a new checkpoint."),
        weights=False,
    )
    evaluator_timeout: float = _field(
        3600.0,
        help=("TF_CONFIG task 'evaluator': stop when no new checkpoint appeared for this long."),
        weights=False,
    )


@dataclasses.dataclass
class EvalConfig:
    """How a checkpoint is evaluated (Sec. 4.2): none of it changes the trained weights."""

    checkpoint: str = _field(
        None,
        help=(
            "Checkpoint to read: a checkpoint file prefix or a logdir (its latest); defaults to "
            "--logdir."
        ),
    )
    eval_split: str = _field(
        "val",
        help="Split to evaluate / visualize.",
    )
    eval_after_training: bool = _field(
        False,
        help=("Evaluate --eval_split with the final weights and print mIOU (quick start)."),
    )
    eval_output_stride: int = _field(
        0,
        help="Output stride at evaluation; 0 = the training one (Tables 4, 6, 10).",
    )
    eval_scales: tuple = _field(
        (1.0,),
        _floats,
        help=("Input scales averaged at evaluation (Sec. 4.2: 0.5,0.75,1.0,1.25,1.5,1.75)."),
        check=lambda v: len(v) > 0 and all(s > 0 for s in v),
        message="takes positive scales, e.g. 0.5,1.0,1.5",
    )
    eval_flip: bool = _field(
        False,
        help="Also average the left-right flipped input (Sec. 4.2).",
    )
    eval_limit: int = _field(
        0,
        help="Evaluate only the first N images (0 = all).",
        check=_at_least(0),
        message="must be >= 0 (0: all)",
    )
    eval_tile_size: tuple = _field(
        None,
        _optional_size,
        help=(
            "Sliding-window inference: images (at each scale) larger than this size, 'H,W' or "
            "one number, are segmented in overlapping windows whose probabilities are averaged; "
            "empty: whole images. In evaluate, predict, visualize and the exported SavedModel."
        ),
        check=_optional_sizes,
        message="takes 'H,W' or one positive size, e.g. 513 (empty: whole images)",
    )
    eval_tile_overlap: float = _field(
        0.25,
        help="Share of a window that its neighbour overlaps, in [0, 1).",
        check=_fraction,
        message="must be in [0, 1)",
    )
    eval_pad_to: tuple = _field(
        None,
        _optional_size,
        help=(
            "The authors' whole-image evaluation: pad each image at the bottom and right to at "
            "least 'H,W' (their eval_crop_size, 513 on VOC) with the backbone's pad pixel "
            "before inference, and crop the prediction back; empty: the image as it is "
            "(CONVENTIONS.md, 'Evaluation size')."
        ),
        check=_optional_sizes,
        message="takes 'H,W' or one positive size, e.g. 513 (empty: no padding)",
    )

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


FIELDS = {field.name: field for cls in SECTIONS.values() for field in dataclasses.fields(cls)}

# Settings checked together: (names, check of their values in that order, message).
RELATIONS = (
    (
        ("min_scale_factor", "max_scale_factor"),
        lambda low, high: low <= high,
        "--min_scale_factor must not exceed --max_scale_factor",
    ),
)


def _arg(field):
    """The library's keyword for ``field``."""
    return field.metadata["arg"] or field.name


def _flag_text(value):
    """``value`` as a flag would write it (tuples comma-separated)."""
    if isinstance(value, (tuple, list)):
        return ",".join(_flag_text(v) for v in value) or "(empty)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _passes(check, *values):
    try:
        return bool(check(*values))
    except (TypeError, ValueError):
        return False


def problem(name, value):
    """The error line of setting ``name`` at ``value`` (a field value), naming its flag
    (``--aspp_dropout must be in [0, 1), got 1.5``); None when the value is valid."""
    field = FIELDS[name]
    check = field.metadata["check"]
    if check is None or (value is None and field.default is None) or _passes(check, value):
        return None
    return f"--{name} {field.metadata['message']}, got {_flag_text(value)}"


def flag_value_passes(name, flag_value):
    """Whether the value of setting ``name``'s flag (as absl parsed it: a list of strings for a
    tuple setting) passes the setting's check (the flags' validators)."""
    field = FIELDS[name]
    parse = field.metadata["parse"]
    if flag_value is None or parse is None:
        return problem(name, flag_value) is None
    try:
        value = parse(flag_value)
    except (TypeError, ValueError):
        return False
    return problem(name, value) is None


def relation_passes(names, check, values):
    """Whether settings checked together (a :data:`RELATIONS` entry) pass: ``values`` maps
    each name to its value."""
    return _passes(check, *(values[name] for name in names))


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass
class ExperimentConfig:
    """A run's whole recipe: data, model, train and eval sections."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        self.check()

    def check(self):
        """Validates every setting (each field's check, then :data:`RELATIONS`): the one
        validation of a config, whichever way it was built (flags, the Python API, a recorded
        config.json, a paper-table row's overrides).

        Raises:
          ConfigError: one line naming the flag, its rule and the value.
        """
        values = setting_values(self)
        for name, value in values.items():
            message = problem(name, value)
            if message:
                raise ConfigError(message)
        for names, check, message in RELATIONS:
            if not relation_passes(names, check, values):
                given = ", ".join(f"--{n}={_flag_text(values[n])}" for n in names)
                raise ConfigError(f"{message} ({given})")

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
