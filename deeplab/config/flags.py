"""The experiment flags, generated from the config's fields, and the one reader of them.

Every field of ``deeplab.config.experiment.ExperimentConfig`` is one flag of the same name, type,
default and help, with a validator from the field's own check (:func:`define_flags`, run when
this module is imported): a bad value is refused while the command line is parsed, in one line
naming the flag. Every binary that reads an experiment setting imports this module, so one
``experiments/*.flags`` file serves every one of them (absl rejects a flagfile that names a flag
the binary does not define); each binary names the sections it reads (``deeplab._console.run``),
and its ``--help`` lists those. Flags that only make sense on a binary's own command line (an
output folder, input images) are defined by that binary.

:func:`experiment_config` reads the parsed flags into one config. Library code never reads
flags: binaries pass the config (or plain values from it) on.
"""

import dataclasses

from absl import flags

from deeplab.config import experiment

FLAGS = flags.FLAGS


def _flag_default(field):
    """The field's default as its flag's default (a list of strings for a tuple field)."""
    if field.metadata["flag_default"] is not None:
        return list(field.metadata["flag_default"])
    if field.type is tuple:
        return [str(v) for v in field.default or ()]
    return field.default


def _define(field, flag_values):
    name, help_text, default = field.name, field.metadata["help"], _flag_default(field)
    module = __name__
    if field.metadata["choices"]:
        flags.DEFINE_enum(
            name,
            default,
            list(field.metadata["choices"]),
            help_text,
            flag_values,
            module_name=module,
        )
    elif field.type is bool:
        flags.DEFINE_boolean(name, default, help_text, flag_values=flag_values, module_name=module)
    elif field.type is int:
        flags.DEFINE_integer(name, default, help_text, flag_values=flag_values, module_name=module)
    elif field.type is float:
        flags.DEFINE_float(name, default, help_text, flag_values=flag_values, module_name=module)
    elif field.type is tuple:
        flags.DEFINE_list(name, default, help_text, flag_values=flag_values, module_name=module)
    else:
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values, module_name=module)
    if field.metadata["check"] is not None:
        flags.register_validator(
            name,
            lambda value: experiment.flag_value_passes(name, value),
            message=f"--{name} {field.metadata['message']}",
            flag_values=flag_values,
        )


def define_flags(flag_values=FLAGS):
    """Defines one flag per experiment setting, section by section, with its validator, and
    one validator per :data:`~deeplab.config.experiment.RELATIONS` entry."""
    for section in experiment.SECTIONS.values():
        for field in dataclasses.fields(section):
            _define(field, flag_values)
    for names, check, message in experiment.RELATIONS:
        flags.register_multi_flags_validator(
            list(names),
            lambda values, names=names, check=check: experiment.relation_passes(
                names, check, values
            ),
            message=message,
            flag_values=flag_values,
        )


define_flags()


def section_flags(sections=(), settings=()):
    """The names of the flags of ``sections`` (e.g. ``("eval",)``) and of the single
    ``settings`` named, in definition order: what a binary reads, which its --help lists."""
    names = [name for section in sections for name in experiment.setting_names(section)]
    return tuple(names + [name for name in settings if name not in names])


def experiment_config(recorded=None):
    """The :class:`~deeplab.config.experiment.ExperimentConfig` of the parsed flags (with
    ``recorded``, a run's recorded config, where the command line names no flag)."""
    return experiment.from_flags(FLAGS, recorded)


def experiment_flag_objects():
    """The absl Flag objects this module defines, in the order it defines them."""
    return FLAGS.flags_by_module_dict()[__name__]


def parse_experiment_args(args):
    """``{flag name: value}`` of every experiment flag after parsing ``args`` (a flagfile, then
    overrides; later flags win) as the binaries parse them, validators included.

    A private set of these flags (:func:`define_flags` on a new ``FlagValues``) parses
    ``args``: the result neither depends on nor changes this process's own flags
    (``deeplab.reproduce`` reads the paper's flagfiles with it). Relative ``--flagfile`` paths
    are relative to the working directory.

    Raises:
      ValueError: a flag these flags do not define, a bad value, an unreadable flagfile.
    """
    values = flags.FlagValues()
    define_flags(values)
    try:
        values(["parse"] + list(args))
    except (flags.Error, OSError) as error:
        raise ValueError(f"{' '.join(args)}: {error}") from error
    return {name: values[name].value for name in values}


def config_of_args(args):
    """The :class:`~deeplab.config.experiment.ExperimentConfig` of ``args`` (e.g.
    ``["--flagfile=experiments/table5.flags"]``), parsed by :func:`parse_experiment_args`."""
    return experiment.from_flag_values(parse_experiment_args(args))


# Single settings of the parsed flags, for scripts (experiments/*.py); binaries are handed the
# whole config by deeplab._console.run.


def crop_size():
    """--crop_size as (height, width)."""
    return experiment_config().data.crop_size


def model_kwargs(num_classes, *, output_stride=None):
    """Keyword arguments of ``deeplab.build_model`` from the flags."""
    return experiment_config().model.build_kwargs(num_classes, output_stride=output_stride)


def inference_options():
    """The ``InferenceOptions`` of the eval flags (--eval_output_stride, --eval_scales,
    --eval_flip, --eval_tile_size, --eval_tile_overlap, --eval_pad_to)."""
    return experiment_config().eval.inference_options()


def eval_scales():
    """--eval_scales as floats."""
    return experiment_config().eval.eval_scales
