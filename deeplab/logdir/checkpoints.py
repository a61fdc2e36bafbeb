"""Training checkpoints: what a run writes into its logdir and how other binaries read it back.

A training logdir holds

    ckpt-N.index, ckpt-N.data-*   tf.train.Checkpoint written by tf.train.CheckpointManager
    checkpoint                    the manager's pointer to the latest ckpt-N
    model_config.json             DeepLabV3.get_config(): the constructor keywords of the model
    dataset_info.json             the dataset's name, num_classes, ignore_label, class_names,
                                  palette
    diverged/ckpt-N-<time>/       checkpoints set aside because their weights gave a non-finite
                                  or diverged loss, gradients or update
                                  (:func:`set_aside_checkpoint`), with why.txt
    train.lock                    while a training runs: its holder (deeplab.logdir.lock)

so evaluate / visualize / export rebuild the model from a checkpoint alone (:func:`load_model`).

Model variables are checkpointed under their Keras variable path ("logits/kernel",
"aspp/aspp1_conv/kernel", ...) rather than through Keras' layer graph. The paths do not
depend on the output stride, so a model trained at output stride 16 restores into one built
at 8 (Tables 4, 6 and 10), and a model with another num_classes restores everything but the
logits (Sec. 4.3: COCO -> VOC fine-tuning; :func:`restore_for_finetuning`). Keying by path also
sidesteps layers that Keras tracks for ``model.weights`` but TensorFlow's object graph does
not see (e.g. layers kept in a list of tuples).

Library code: no flags are read here.
"""

import json
import logging
import os
import re
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.model import fuse
from deeplab.model import quantize
from deeplab.model.deeplabv3 import DeepLabV3

log = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"
DATASET_INFO_FILE = "dataset_info.json"
CHECKPOINT_NAME = "ckpt"
# Name of the dict of model variables inside every tf.train.Checkpoint this module writes.
WEIGHTS_KEY = "weights"
STEP_KEY = "step"
# The states of the model's random generators (ASPP dropout): a resumed run draws the masks the
# uninterrupted one would. Checkpoints written before it was saved lack it (restored without).
RNG_KEY = "rng"
_DATASET_INFO_FIELDS = ("name", "num_classes", "ignore_label", "class_names", "palette")


def variables_by_path(model):
    """Every variable of ``model`` (trainable or not) keyed by its Keras path.

    Raises:
      ConfigError: two variables share a path (their checkpoint keys would collide).
    """
    result = {}
    for variable in model.weights:
        if variable.path in result:
            raise ConfigError(
                f"two variables of model {model.name!r} share the path "
                f"{variable.path!r}; cannot checkpoint it by variable path"
            )
        result[variable.path] = variable
    return result


def rng_states(model):
    """{layer name: seed-generator state variable} of every layer of ``model`` that draws
    random numbers (keras SeedGenerator; not part of ``model.weights``)."""
    states = {}
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
        generator = getattr(layer, "seed_generator", None)
        if generator is not None and getattr(generator, "state", None) is not None:
            key = layer.name
            while key in states:
                key += "_"
            states[key] = generator.state
    return states


def checkpoint_has_rng(prefix):
    """True if the checkpoint at ``prefix`` holds the random generators' states."""
    return any(name.startswith(RNG_KEY + "/") for name, _ in tf.train.list_variables(prefix))


def make_checkpoint(model, optimizer=None, step=None, rng=False):
    """A tf.train.Checkpoint of the model's variables (by path), the optimizer and the step.

    Args:
      model: a keras.Model (a :class:`deeplab.model.deeplabv3.DeepLabV3`).
      optimizer: a built keras optimizer (its variables must exist before restoring into it:
        call ``optimizer.build(model.trainable_variables)`` first), or None.
      step: a scalar tf.Variable counting training steps, or None.
      rng: also the states of the model's random generators (:func:`rng_states`), so that a
        resumed run draws the same dropout masks as an uninterrupted one.

    Returns:
      tf.train.Checkpoint.
    """
    objects = {WEIGHTS_KEY: variables_by_path(model)}
    if rng and rng_states(model):
        objects[RNG_KEY] = rng_states(model)
    if optimizer is not None:
        objects["optimizer"] = optimizer
    if step is not None:
        objects[STEP_KEY] = step
    return tf.train.Checkpoint(**objects)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_run_info(logdir, model, dataset_info=None):
    """Writes model_config.json and dataset_info.json into ``logdir`` (atomically).

    Args:
      logdir: the training run's folder.
      model: a :class:`deeplab.model.deeplabv3.DeepLabV3` (its ``get_config()`` is written).
      dataset_info: dict from ``deeplab.data.tfrecord.read_dataset_info``; only name, num_classes,
        ignore_label, class_names and palette are kept. None writes no dataset_info.json.
    """
    atomic_io.write_json(os.path.join(logdir, MODEL_CONFIG_FILE), _jsonable(model.get_config()))
    if dataset_info is not None:
        info = {k: dataset_info[k] for k in _DATASET_INFO_FIELDS if k in dataset_info}
        atomic_io.write_json(os.path.join(logdir, DATASET_INFO_FILE), _jsonable(info))


def resolve_checkpoint(path):
    """A checkpoint prefix (".../ckpt-N") from a prefix, one of its files, or a logdir.

    Args:
      path: a checkpoint prefix, its ``.index`` / ``.data-*`` file, or a folder holding a
        ``checkpoint`` file (a training logdir: its latest checkpoint is taken).

    Returns:
      The checkpoint prefix, as a string.

    Raises:
      UserError: nothing readable as a checkpoint is there.
    """
    if not path:
        raise UserError(
            "no checkpoint given: pass --checkpoint=PATH (a training logdir or a "
            "checkpoint prefix such as runs/x/ckpt-1000)"
        )
    path = os.fspath(path)
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise UserError(
                f"--checkpoint={path}: the folder holds no checkpoint (no 'checkpoint' "
                "file naming a ckpt-N); train into it first or pass a checkpoint prefix"
            )
        return prefix
    if path.endswith(".index"):
        path = path[: -len(".index")]
    elif ".data-" in os.path.basename(path):
        path = path[: path.rindex(".data-")]
    if os.path.isfile(path + ".index"):
        return path
    raise UserError(
        f"--checkpoint={path}: not a checkpoint prefix (no {path}.index) nor a folder; "
        "pass a training logdir or a prefix such as runs/x/ckpt-1000"
    )


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing: {what}") from error
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read it as JSON ({error})") from error


def read_run_info(checkpoint):
    """The model config and dataset info saved beside a checkpoint.

    Args:
      checkpoint: a checkpoint prefix, file or logdir (see :func:`resolve_checkpoint`).

    Returns:
      dict with
        "checkpoint": the resolved checkpoint prefix;
        "logdir": its folder;
        "model_config": the DeepLabV3 constructor keywords (model_config.json);
        "dataset_info": dict with name, num_classes, ignore_label, class_names, palette
          (dataset_info.json), or None when the run wrote none;
        "step": the training step the checkpoint was written at, or None.

    Raises:
      UserError: no checkpoint, or no model_config.json beside it.
    """
    prefix = resolve_checkpoint(checkpoint)
    logdir = os.path.dirname(prefix)
    config = _read_json(
        os.path.join(logdir, MODEL_CONFIG_FILE),
        "the training run writes it beside its checkpoints; without it the "
        "model cannot be rebuilt (was this checkpoint written by deeplab.train?)",
    )
    info_path = os.path.join(logdir, DATASET_INFO_FILE)
    dataset_info = _read_json(info_path, "") if os.path.exists(info_path) else None
    step = None
    values = _checkpoint_values(prefix)
    if values.root_keys.get(STEP_KEY) is not None:
        step = int(values.reader.get_tensor(values.root_keys[STEP_KEY]))
    return {
        "checkpoint": prefix,
        "logdir": logdir,
        "model_config": config,
        "dataset_info": dataset_info,
        "step": step,
    }


class _CheckpointValues:
    """Checkpoint keys of a checkpoint written by :func:`make_checkpoint`, found by object path.

    Attributes:
      reader: tf.train.CheckpointReader.
      weights: {variable path: checkpoint tensor key} of the model variables.
      root_keys: {"step": key} for scalar variables attached to the root.
    """

    def __init__(self, prefix):
        try:
            self.reader = tf.train.load_checkpoint(prefix)
            graph = trackable_object_graph_pb2.TrackableObjectGraph()
            graph.ParseFromString(self.reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
        except (tf.errors.OpError, ValueError) as error:
            raise UserError(f"{prefix}: cannot read the checkpoint ({error})") from error
        nodes = graph.nodes

        def value_key(node_id):
            for attribute in nodes[node_id].attributes:
                if attribute.name == "VARIABLE_VALUE":
                    return attribute.checkpoint_key
            return None

        root = {child.local_name: child.node_id for child in nodes[0].children}
        self.root_keys = {STEP_KEY: value_key(root[STEP_KEY]) if STEP_KEY in root else None}
        self.weights = {}
        if WEIGHTS_KEY not in root:
            raise UserError(
                f"{prefix}: not a deeplab training checkpoint (it has no "
                f"'{WEIGHTS_KEY}' object; was it written by deeplab.train?)"
            )
        for child in nodes[root[WEIGHTS_KEY]].children:
            key = value_key(child.node_id)
            if key is not None:
                self.weights[child.local_name] = key

    def shape(self, path):
        return tuple(self.reader.get_variable_to_shape_map()[self.weights[path]])


def _checkpoint_values(prefix):
    return _CheckpointValues(prefix)


def restore_weights(model, checkpoint):
    """Restores every variable of ``model`` from a checkpoint; all must be present and match.

    Optimizer slots and the step in the checkpoint are ignored.

    Raises:
      UserError: the checkpoint lacks variables of the model or their shapes differ.
    """
    prefix = resolve_checkpoint(checkpoint)
    values = _checkpoint_values(prefix)
    variables = variables_by_path(model)
    # A quantization-aware checkpoint written before the weights' grids were chosen per
    # channel has none: left at 0, its convolutions round on the finest grid, as in its
    # training.
    for path in quantize.weight_grid_paths(model) - set(values.weights):
        del variables[path]
    missing = sorted(set(variables) - set(values.weights))
    mismatched = sorted(
        p
        for p in set(variables) & set(values.weights)
        if values.shape(p) != tuple(variables[p].shape)
    )
    if missing or mismatched:
        details = (
            [f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"]
            if missing
            else []
        )
        details += [
            f"{p}: checkpoint {values.shape(p)} vs model {tuple(variables[p].shape)}"
            for p in mismatched[:5]
        ]
        raise UserError(
            f"{prefix} does not match the model ({'; '.join(details)}); "
            "check --backbone/--num_classes/--aspp_filters or use --init_checkpoint"
        )
    status = tf.train.Checkpoint(**{WEIGHTS_KEY: variables}).read(prefix)
    status.expect_partial()
    status.assert_existing_objects_matched()
    return prefix


def load_model(
    checkpoint,
    *,
    output_stride=None,
    num_classes=None,
    input_shape=None,
    fuse_batch_norm=False,
    performance=None,
    **overrides,
):
    """Rebuilds the trained DeepLabV3 from its model_config.json and restores its weights.

    Args:
      checkpoint: a checkpoint prefix, file or training logdir (its latest checkpoint).
      output_stride: evaluate at another output stride than the training one (Tables 4, 6,
        10: train at 16, evaluate at 8). No variable depends on it.
      num_classes: the number of classes the caller expects (e.g. from the evaluation
        dataset); a value that disagrees with the checkpoint is an error, since the logits
        cannot be restored. None accepts the checkpoint's.
      input_shape: shape of one input image, e.g. (513, 513, 3) for export; default the
        training config's (normally (None, None, 3)).
      fuse_batch_norm: return the inference model with every BN folded into its convolution
        (deeplab.model.fuse; what evaluate, export and predict run). Not for training.
      performance: a ``deeplab.model.options.PerformanceOptions`` for the rebuilt model (None:
        the defaults). Not part of model_config.json, so never read from the run.
      **overrides: other DeepLabV3 keywords that change no variable (``upsample_logits``,
        ``freeze_batch_norm``, ``batch_norm_momentum``, ...).

    Returns:
      A :class:`deeplab.model.deeplabv3.DeepLabV3` holding the checkpoint's weights.

    Raises:
      UserError: no checkpoint / model_config.json, or weights that do not fit.
    """
    info = read_run_info(checkpoint)
    config = dict(info["model_config"])
    # The checkpoint's own logits say how many classes it was trained with; model_config.json
    # is the logdir's (a later run into the same logdir may have rewritten it).
    trained = checkpoint_num_classes(info["checkpoint"])
    config_path = os.path.join(info["logdir"], MODEL_CONFIG_FILE)
    if trained is not None and trained != int(config["num_classes"]):
        raise ConfigError(
            f"{info['checkpoint']} was trained with num_classes={trained} (its logits), but "
            f"{config_path} says num_classes={config['num_classes']}: another run rewrote it; "
            "evaluate a checkpoint of that run, or restore the file"
        )
    if num_classes is not None and int(num_classes) != int(config["num_classes"]):
        raise ConfigError(
            f"{info['checkpoint']} was trained with num_classes={config['num_classes']}, but "
            f"num_classes={int(num_classes)} is asked for here (--num_classes, or the "
            "dataset's dataset.json): pass the dataset the run was trained on, or train a "
            "new run (--init_checkpoint fine-tunes this one to the new classes)"
        )
    if output_stride:
        config["output_stride"] = int(output_stride)
    if input_shape is not None:
        config["input_shape"] = tuple(input_shape)
    config.update(overrides)
    config["performance"] = performance
    model = DeepLabV3.from_config(config)
    restore_weights(model, info["checkpoint"])
    log.debug(
        "Restored %s (step %s) into %s at output stride %d",
        info["checkpoint"],
        info["step"],
        config.get("backbone"),
        model.output_stride,
    )
    if fuse_batch_norm:
        model = fuse.fuse_batch_norm(model)
    return model


def checkpoint_num_classes(prefix):
    """The class count of the logits a checkpoint holds (the last dimension of
    ``logits/kernel``), or None where it has none by that path."""
    values = _checkpoint_values(prefix)
    if "logits/kernel" not in values.weights:
        return None
    return int(values.shape("logits/kernel")[-1])


def restore_for_finetuning(model, checkpoint):
    """Initializes ``model`` from an earlier run, skipping variables that do not fit.

    For the second training stage and COCO -> VOC fine-tuning (Sec. 4.3): every variable
    whose path and shape match is restored; the others (normally ``logits/kernel`` and
    ``logits/bias`` when num_classes differs) keep their initialization and are logged. The
    activation ranges and weight grids of a quantization-aware model, absent from a float
    run, are not reported: the first training batch sets them.
    Optimizer state and the step are not restored: fine-tuning starts at step 0.

    Args:
      model: the model to initialize (already built).
      checkpoint: a checkpoint prefix, file or training logdir.

    Returns:
      Sorted list of the skipped variable paths of ``model``.

    Raises:
      UserError: no checkpoint, or nothing in it fits the model.
    """
    prefix = resolve_checkpoint(checkpoint)
    values = _checkpoint_values(prefix)
    range_paths = quantize.training_state_paths(model)
    skipped = []
    restored = 0
    for path, variable in variables_by_path(model).items():
        if path not in values.weights and path in range_paths:
            # A quantization-aware model started from a float run: its activation ranges
            # and weight grids are set by the first training batch (deeplab.model.quantize).
            continue
        if path not in values.weights:
            skipped.append(path)
            log.warning("init checkpoint %s: no %s; keeping its initialization", prefix, path)
            continue
        shape = values.shape(path)
        if shape != tuple(variable.shape):
            skipped.append(path)
            log.warning(
                "init checkpoint %s: %s has shape %s there, %s here; keeping its initialization",
                prefix,
                path,
                shape,
                tuple(variable.shape),
            )
            continue
        value = values.reader.get_tensor(values.weights[path])
        variable.assign(np.asarray(value, dtype=variable.dtype))
        restored += 1
    if restored == 0:
        raise UserError(
            f"--init_checkpoint={checkpoint}: no variable of the model is in {prefix}; "
            "is it a checkpoint of another backbone?"
        )
    log.debug(
        "Initialized %d variables from %s; skipped %d: %s",
        restored,
        prefix,
        len(skipped),
        ", ".join(skipped) or "none",
    )
    return sorted(skipped)


# ------------------------------------------------------------------------------------------------
# Resuming safely: find the newest intact checkpoint of a logdir.
# ------------------------------------------------------------------------------------------------

_CKPT_INDEX = re.compile(r"^" + CHECKPOINT_NAME + r"-(\d+)\.index$")


def checkpoint_steps_on_disk(logdir):
    """{step: prefix} of every ``ckpt-N`` whose ``.index`` file is in ``logdir``, whatever the
    ``checkpoint`` pointer file says (it may be missing, empty or garbage)."""
    found = {}
    if not tf.io.gfile.isdir(logdir):
        return found
    for name in tf.io.gfile.listdir(logdir):
        match = _CKPT_INDEX.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(logdir, name[: -len(".index")])
    return found


def remove_interrupted_writes(logdir):
    """Deletes what an interrupted checkpoint write leaves: ``ckpt-N_temp*/`` folders and
    ``checkpoint.tmp*`` files. Returns the names removed."""
    removed = []
    if not tf.io.gfile.isdir(logdir):
        return removed
    for name in tf.io.gfile.listdir(logdir):
        name = name.rstrip("/")
        path = os.path.join(logdir, name)
        if re.match(r"^" + CHECKPOINT_NAME + r"-\d+_temp", name) and tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
            removed.append(name)
        elif name.startswith("checkpoint.tmp") and not tf.io.gfile.isdir(path):
            tf.io.gfile.remove(path)
            removed.append(name)
    return sorted(removed)


def verify_checkpoint(prefix):
    """Reads every tensor of ``prefix`` (TensorFlow checks each one's CRC32C) and checks that
    the floating-point ones are finite. Returns None if intact, else a short reason."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key, dtype in reader.get_variable_to_dtype_map().items():
            value = reader.get_tensor(key)
            if dtype.is_floating and not np.all(np.isfinite(value)):
                return f"non-finite values in {key}"
    except Exception as error:  # pylint: disable=broad-except  (DataLoss, IndexError, OSError...)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"unreadable ({type(error).__name__}: {message[:160]})"
    return None


def write_checkpoint_pointer(logdir, prefixes):
    """Writes ``logdir``'s ``checkpoint`` file (the pointer ``tf.train.CheckpointManager`` and
    ``tf.train.latest_checkpoint`` read): ``prefixes`` oldest first, the last one the latest.

    What ``tf.compat.v1.train.update_checkpoint_state`` writes (relative names), without its
    deprecation warning, which would add lines to a one-line stop message; atomically."""
    names = [os.path.basename(os.fspath(p)) for p in prefixes]
    lines = [f"model_checkpoint_path: {json.dumps(names[-1])}"]
    lines += [f"all_model_checkpoint_paths: {json.dumps(name)}" for name in names]
    text = "\n".join(lines) + "\n"
    path = os.path.join(logdir, "checkpoint")
    if "://" in os.fspath(logdir):  # gs:// and other TensorFlow file systems
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(text)
    else:
        atomic_io.write_text(path, text)


def newest_intact_checkpoint(logdir, log_skipped=True, repair_pointer=True):
    """The newest checkpoint of ``logdir`` that reads back whole and finite, or None if it holds
    none at all.

    Newer checkpoints that fail :func:`verify_checkpoint` are skipped, with one logged line
    (INFO) naming them unless not ``log_skipped`` (a cluster's other workers). The
    ``checkpoint`` pointer file is rewritten to list the intact ones if it was missing,
    unreadable or pointed at a bad checkpoint (``repair_pointer``; only the chief of a cluster
    does), so that tf.train.CheckpointManager keeps managing them.

    Raises:
      UserError: ``logdir`` holds checkpoints and none of them is intact (a fresh start would
        overwrite them): the message names them and ``--fresh_start``.
    """
    on_disk = checkpoint_steps_on_disk(logdir)
    if not on_disk:
        return None
    bad = []
    for step in sorted(on_disk, reverse=True):
        prefix = on_disk[step]
        reason = verify_checkpoint(prefix)
        if reason is None:
            if bad and log_skipped:
                log.info(
                    f"Skipped {len(bad)} newer checkpoint(s) that cannot be resumed from: "
                    + "; ".join(f"{os.path.basename(p)}: {r}" for p, r in bad)
                )
            good = [on_disk[s] for s in sorted(on_disk) if s <= step]
            try:
                state = tf.train.get_checkpoint_state(logdir)
                pointer = state.model_checkpoint_path if state else None
            except Exception:  # pylint: disable=broad-except  (a garbage pointer file)
                pointer = None
            if repair_pointer and (
                pointer is None or os.path.basename(pointer) != os.path.basename(prefix)
            ):
                write_checkpoint_pointer(logdir, good)
            return prefix
        bad.append((prefix, reason))
    names = ", ".join(f"{os.path.basename(p)} ({r})" for p, r in bad)
    raise UserError(
        f"--logdir={logdir} holds checkpoints but none can be resumed from: {names}. "
        "Restore them, use a new --logdir, or pass --fresh_start to train from step 0 "
        "here (checkpoints of the same steps are then overwritten)"
    )


DIVERGED_DIR = "diverged"


def set_aside_checkpoint(logdir, prefix, reason):
    """Moves checkpoint ``prefix`` of ``logdir`` into ``logdir/diverged/<name>-<time>/`` with a
    ``why.txt`` (nothing is deleted or overwritten) and points the ``checkpoint`` file at the
    newest checkpoint left, so the next run resumes from that one instead of from weights known
    to give a non-finite loss.

    A checkpoint is finite when written; its weights can still be diverged (huge but finite, so
    that the next step's loss overflows). The step that starts from them is the test: when its
    loss or gradients are non-finite, its loss diverged (``deeplab.training.bookkeeping``) or
    its update made the weights non-finite, the checkpoint it started from is set aside.

    Returns:
      (the folder the files went to, prefix of the checkpoint a rerun resumes from or None).

    Raises:
      OSError / tf.errors.OpError: the files could not be moved (the caller reports it).
    """
    name = os.path.basename(prefix)
    folder = os.path.join(logdir, DIVERGED_DIR, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 0
    while tf.io.gfile.exists(folder + (f"-{suffix}" if suffix else "")):
        suffix += 1
    folder += f"-{suffix}" if suffix else ""
    # By name, not by glob: a logdir may hold [ ] * ? in its path.
    files = [f for f in tf.io.gfile.listdir(logdir) if f.startswith(name + ".")]
    if not files:
        raise FileNotFoundError(f"no files of {prefix} to move")
    tf.io.gfile.makedirs(folder)
    for file_name in files:
        tf.io.gfile.rename(os.path.join(logdir, file_name), os.path.join(folder, file_name))
    with tf.io.gfile.GFile(os.path.join(folder, "why.txt"), "w") as handle:
        handle.write(reason.rstrip() + "\n")
    remaining = checkpoint_steps_on_disk(logdir)
    pointer = os.path.join(logdir, "checkpoint")
    if remaining:
        ordered = [remaining[step] for step in sorted(remaining)]
        write_checkpoint_pointer(logdir, ordered)
        return folder, ordered[-1]
    if tf.io.gfile.exists(pointer):
        tf.io.gfile.remove(pointer)
    return folder, None


def weights_are_finite(model):
    """True if every variable of ``model`` is finite (checked before a checkpoint is kept)."""
    for variable in model.weights:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return False
    return True
