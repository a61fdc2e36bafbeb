r"""Reference run: torchvision's DeepLabv3-ResNet-50 trained with our CamVid recipe (issue 8).

    python experiments/camvid_torchvision.py --flagfile=experiments/camvid.flags \
        --torch_logdir=runs/camvid_torchvision [--stop_at_step=N]

Same recipe as ``python -m deeplab.train --flagfile=experiments/camvid.flags``, read from the same
flagfile:

- the same batches: the training stream is our own tf.data pipeline
  (``deeplab.data.input_pipeline.make_train_dataset``, same crop, random scale, flip, seed), handed
  over as numpy arrays (NHWC -> NCHW);
- the same model shape: torchvision ``resnet50(weights=None)`` (random init, like ours) with
  ``replace_stride_with_dilation=[False, False, True]`` (output stride 16), layer4 unit rates
  2 x (1, 2, 4) (multi-grid), torchvision's ``DeepLabHead`` ASPP at rates --atrous_rates with image
  pooling. This is how ``torchvision.models.segmentation.deeplabv3_resnet50(weights=None,
  weights_backbone=None, num_classes=11)`` is built, except that it fixes output stride 8 and
  rates 12/24/36, and puts a 3x3 conv + BN + ReLU after ASPP that the paper (and ours) does not
  have: removed here, as in benchmarks/peers/run_torchvision.py. torchvision's ResNet is v1.5
  (stride on the 3x3 conv), ours v1: kept;
- the same loss and optimizer: class-weighted cross-entropy summed over the valid pixels and
  divided by their number (ignore label excluded), L2 weight decay on conv kernels only
  (ours adds wd/2 * |w|^2 to the loss; SGD's weight_decay=wd gives the same gradient), SGD
  momentum --momentum, poly learning rate (--base_learning_rate, --learning_power,
  --training_steps), BN momentum 1 - --batch_norm_momentum, bfloat16 autocast when
  --mixed_precision=bfloat16;
- the same evaluation: whole val images at their own size, scale 1, no flip, float32 (as
  ``deeplab.evaluate``), confusion matrix and mIOU from ``deeplab.evaluation.metrics``.

--stop_at_step stops early on the same schedule (the learning rate still decays towards
--training_steps), so a short reference run compares with our checkpoint at that step.
Checkpoints (model, optimizer, step) go to --torch_logdir every --save_checkpoint_steps; the
same command resumes. history.jsonl there holds the loss per logged step and eval results.

PyTorch comes from peers/torch (benchmarks/setup_peers.sh torch): its site-packages is appended
to sys.path, so this runs under the project's .venv python (TensorFlow for the data, torch for the
model; both use numpy 2.4 here).
"""

import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from deeplab.config import flags as experiment_flags  # noqa: E402,F401  (defines the shared flags)

flags.DEFINE_string(
    "torch_logdir", "runs/camvid_torchvision", "Checkpoints and history of this run."
)
flags.DEFINE_string(
    "torch_site_packages",
    None,
    "site-packages holding torch + torchvision (default: peers/torch's).",
)
flags.DEFINE_integer("torch_threads", 2, "torch intra-op threads.")
flags.DEFINE_boolean(
    "eval_only", False, "Only evaluate (the latest checkpoint, or --torch_weights)."
)
flags.DEFINE_integer(
    "precise_bn_batches",
    0,
    "With --eval_only: first re-estimate every BN layer's statistics as the plain "
    "average over this many training batches (weights unchanged), as "
    "experiments/camvid_bn_check.py does for ours.",
)
flags.DEFINE_string(
    "torch_weights", None, "With --eval_only: a model-STEP.pt file of --torch_logdir to evaluate."
)
FLAGS = flags.FLAGS


def _import_torch():
    site = FLAGS.torch_site_packages
    if site is None:
        found = glob.glob(os.path.join(_ROOT, "peers", "torch", "lib", "python3*", "site-packages"))
        if not found:
            raise SystemExit(
                "camvid_torchvision.py: no peers/torch; run `bash benchmarks/setup_peers.sh torch` "
                "or pass --torch_site_packages"
            )
        site = found[0]
    sys.path.append(site)
    import torch  # pylint: disable=import-outside-toplevel

    # See benchmarks/peers/run_torchvision.py: declare the two schemas torchvision's (CUDA-linked,
    # unloadable here) extension would register, so that `import torchvision` succeeds.
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # pylint: disable=import-outside-toplevel

    return torch, torchvision, lib


def build_model(torch, num_classes, atrous_rates, multi_grid, bn_momentum):
    from torch import nn  # pylint: disable=import-outside-toplevel
    from torchvision.models import resnet50  # pylint: disable=import-outside-toplevel
    from torchvision.models._utils import IntermediateLayerGetter  # pylint: disable=import-outside-toplevel
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead  # pylint: disable=import-outside-toplevel
    from torchvision.models.segmentation.deeplabv3 import DeepLabV3  # pylint: disable=import-outside-toplevel

    backbone = resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    for unit, grid in zip(backbone.layer4, multi_grid):  # output stride 16: block rate 2
        rate = 2 * grid
        unit.conv2.dilation = (rate, rate)
        unit.conv2.padding = (rate, rate)
    backbone = IntermediateLayerGetter(backbone, return_layers={"layer4": "out"})
    head = DeepLabHead(2048, num_classes, atrous_rates=list(atrous_rates))
    head[1], head[2], head[3] = nn.Identity(), nn.Identity(), nn.Identity()
    model = DeepLabV3(backbone, head, None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0 - bn_momentum
    return model


def poly_rate(step, _schedule=[]):  # pylint: disable=dangerous-default-value
    """deeplab.train's learning rate at ``step`` (the same PolyLearningRate, built once)."""
    if not _schedule:
        from deeplab.training.schedules import PolyLearningRate  # pylint: disable=import-outside-toplevel

        _schedule.append(
            PolyLearningRate(
                FLAGS.base_learning_rate,
                FLAGS.training_steps,
                power=FLAGS.learning_power,
                end_learning_rate=FLAGS.end_learning_rate,
                warmup_steps=FLAGS.warmup_steps,
            )
        )
    return float(_schedule[0](step))


def evaluate(torch, model, dataset_dir, split, num_classes, ignore_label, autocast, limit=None):
    import numpy as np  # pylint: disable=import-outside-toplevel

    from deeplab.data import input_pipeline  # pylint: disable=import-outside-toplevel
    from deeplab.evaluation import metrics

    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    with torch.inference_mode():
        for example in input_pipeline.make_eval_dataset(
            dataset_dir, split, num_classes=num_classes, limit=limit
        ).as_numpy_iterator():
            image = torch.from_numpy(
                np.ascontiguousarray(example["image"].transpose(2, 0, 1)[None])
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(image)["out"]
            prediction = logits.float().argmax(1)[0].numpy()
            confusion += np.asarray(
                metrics.confusion_matrix_update(
                    example["label"], prediction, num_classes, ignore_label
                )
            )
    model.train()
    return confusion


def main(argv):
    del argv
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_inter_op_parallelism_threads(1)
    from deeplab.data import input_pipeline  # pylint: disable=import-outside-toplevel
    from deeplab.data import tfrecord
    from deeplab.evaluation import metrics

    torch, _, _lib = _import_torch()
    torch.set_num_threads(FLAGS.torch_threads)
    torch.manual_seed(FLAGS.seed)
    info = tfrecord.read_dataset_info(FLAGS.dataset_dir)
    num_classes, ignore_label = info["num_classes"], info["ignore_label"]
    crop = experiment_flags.crop_size()
    autocast = FLAGS.mixed_precision == "bfloat16"
    if FLAGS.mixed_precision == "float16":
        raise SystemExit("camvid_torchvision.py: --mixed_precision=float16 is not supported here")

    model = build_model(
        torch,
        num_classes,
        [int(r) for r in FLAGS.atrous_rates],
        [int(g) for g in FLAGS.multi_grid],
        FLAGS.batch_norm_momentum,
    )
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim == 4 else no_decay).append(param)
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": FLAGS.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=FLAGS.base_learning_rate,
        momentum=FLAGS.momentum,
    )
    weights = torch.tensor([float(w) for w in FLAGS.class_weights]) if FLAGS.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_label, reduction="sum")

    os.makedirs(FLAGS.torch_logdir, exist_ok=True)
    ckpt_path = os.path.join(FLAGS.torch_logdir, "checkpoint.pt")
    history_path = os.path.join(FLAGS.torch_logdir, "history.jsonl")
    step = 0
    if os.path.exists(ckpt_path):
        # weights_only: tensors, numbers and containers only; no pickled code runs on load.
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"Resuming from {ckpt_path} at step {step}", flush=True)

    def log(record):
        with open(history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def save():
        tmp = ckpt_path + ".tmp"
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp
        )
        os.replace(tmp, ckpt_path)
        torch.save(model.state_dict(), os.path.join(FLAGS.torch_logdir, f"model-{step}.pt"))

    def run_eval():
        # float32, as deeplab.evaluate (it rebuilds the model under the float32 policy).
        confusion = evaluate(
            torch,
            model,
            FLAGS.dataset_dir,
            FLAGS.eval_split,
            num_classes,
            ignore_label,
            False,
            limit=FLAGS.eval_limit or None,
        )
        miou = metrics.mean_iou(confusion)
        print(metrics.format_iou_table(confusion, info.get("class_names")), flush=True)
        log(
            {
                "step": step,
                "eval_split": FLAGS.eval_split,
                "miou": miou,
                "iou": [
                    None if np.isnan(v) else float(v) for v in metrics.iou_per_class(confusion)
                ],
                "pixel_accuracy": metrics.pixel_accuracy(confusion),
            }
        )
        print(f"torchvision step {step}: {FLAGS.eval_split} mIOU {100 * miou:.2f}%", flush=True)

    if FLAGS.eval_only:
        if FLAGS.torch_weights:
            model.load_state_dict(torch.load(FLAGS.torch_weights))
            step = int(os.path.basename(FLAGS.torch_weights).split("-")[1].split(".")[0])
        if FLAGS.precise_bn_batches:
            stream = input_pipeline.make_train_dataset(
                FLAGS.dataset_dir,
                FLAGS.train_split,
                batch_size=FLAGS.batch_size,
                crop_size=crop,
                min_scale=FLAGS.min_scale_factor,
                max_scale=FLAGS.max_scale_factor,
                seed=123,
                num_classes=num_classes,
            )
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.reset_running_stats()
                    module.momentum = None  # cumulative average
            model.train()
            with torch.no_grad():
                for images, _ in stream.take(FLAGS.precise_bn_batches).as_numpy_iterator():
                    model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
            print(
                f"BN statistics re-estimated over {FLAGS.precise_bn_batches} train batches",
                flush=True,
            )
        run_eval()
        return

    stop = FLAGS.stop_at_step or FLAGS.training_steps
    dataset = input_pipeline.make_train_dataset(
        FLAGS.dataset_dir,
        FLAGS.train_split,
        batch_size=FLAGS.batch_size,
        crop_size=crop,
        min_scale=FLAGS.min_scale_factor,
        max_scale=FLAGS.max_scale_factor,
        scale_step=FLAGS.scale_factor_step,
        flip=FLAGS.random_flip,
        shuffle_buffer=FLAGS.shuffle_buffer,
        seed=FLAGS.seed + 1_000_003 * step,  # as deeplab.train: a resumed run draws a new stream
        num_classes=num_classes,
    )
    print(
        f"Training torchvision DeepLabV3-ResNet-50 (OS 16, random init) steps {step}->{stop} of "
        f"{FLAGS.training_steps}, batch {FLAGS.batch_size}, crop {crop}, "
        f"{'bfloat16 autocast' if autocast else 'float32'}",
        flush=True,
    )
    model.train()
    window_start, window_steps, run_start, start_step = time.time(), 0, time.time(), step
    for images, labels in dataset.as_numpy_iterator():
        if step >= stop:
            break
        for group in optimizer.param_groups:
            group["lr"] = poly_rate(step)
        images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        labels = torch.from_numpy(labels.astype(np.int64))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(images)["out"]
        valid = (labels != ignore_label).sum().clamp(min=1)
        loss = loss_fn(logits.float(), labels) / valid
        if not torch.isfinite(loss):
            raise SystemExit(
                f"non-finite loss at step {step + 1}; the last checkpoint is {ckpt_path}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window_steps += 1
        if step % FLAGS.log_steps == 0 or step == stop:
            now = time.time()
            ips = window_steps * FLAGS.batch_size / (now - window_start)
            acc = float(((logits.argmax(1) == labels) & (labels != ignore_label)).sum() / valid)
            print(
                f"step {step:>6d}/{FLAGS.training_steps}  loss {float(loss.detach()):.4f}  "
                f"lr {poly_rate(step - 1):.4g}  "
                f"acc {acc:.3f}  {ips:.2f} img/s",
                flush=True,
            )
            log(
                {
                    "step": step,
                    "loss": float(loss.detach()),
                    "pixel_accuracy": acc,
                    "images_per_second": ips,
                    "wall": now,
                }
            )
            window_start, window_steps = now, 0
        if step % FLAGS.save_checkpoint_steps == 0 or step == stop:
            save()
    print(f"Trained steps {start_step}->{step} in {time.time() - run_start:.0f} s", flush=True)
    run_eval()


if __name__ == "__main__":
    app.run(main)
