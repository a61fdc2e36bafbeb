r"""Diagnostic (issue 8): how much of an early checkpoint's low val mIOU is stale BN statistics?

    python experiments/camvid_bn_check.py --checkpoint=runs/camvid/ckpt-100 [--batches=20]

Evaluates the checkpoint on the whole val split (scale 1, training output stride) twice with
deeplab.evaluation.evaluator.evaluate: (a) as saved, BN using its moving statistics (what
deeplab.evaluate reports); (b) after re-estimating every BN layer's moving mean and variance as the
plain average over --batches training batches (the training stream of experiments/camvid.flags: same
crops and augmentation), weights unchanged ("precise BN"). Nothing is written to the run.

Cross-stride (issue 34): ``--estimate_output_stride=16 --output_stride=8`` re-estimates the
statistics with the network at OS 16 and evaluates at OS 8 with them; against
``--estimate_output_stride=8 --output_stride=8`` it says whether statistics gathered at OS 16 are
what holds OS 8 back. Both see the same training batches (fixed seed).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset_dir", default="data/camvid")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--crop_size", default="176,240")
    parser.add_argument("--eval_limit", type=int, default=0)
    parser.add_argument(
        "--output_stride",
        type=int,
        default=0,
        help="evaluate (and re-estimate BN) at this output stride; 0: the run's",
    )
    parser.add_argument(
        "--estimate_output_stride",
        type=int,
        default=0,
        help="re-estimate BN with the network at this output stride; 0: --output_stride",
    )
    args = parser.parse_args()

    import keras  # pylint: disable=import-outside-toplevel

    from deeplab.data import input_pipeline
    from deeplab.data import tfrecord
    from deeplab.evaluation import evaluator as evaluation
    from deeplab.logdir import checkpoints  # pylint: disable=import-outside-toplevel
    from deeplab.model import preprocessing  # pylint: disable=import-outside-toplevel
    from deeplab.model.deeplabv3 import iter_layers  # pylint: disable=import-outside-toplevel

    info = tfrecord.read_dataset_info(args.dataset_dir)
    model = checkpoints.load_model(
        args.checkpoint,
        num_classes=info["num_classes"],
        upsample_logits=True,
        output_stride=args.output_stride or None,
    )

    def score(tag):
        dataset = input_pipeline.make_eval_dataset(
            args.dataset_dir, "val", num_classes=info["num_classes"], limit=args.eval_limit or None
        )
        results = evaluation.evaluate(
            model,
            dataset,
            num_classes=info["num_classes"],
            ignore_label=info["ignore_label"],
            class_names=info["class_names"],
        )
        print(
            f"{tag}: val mIOU {100 * results['miou']:.2f}%  pixel accuracy "
            f"{100 * results['pixel_accuracy']:.2f}  ({results['num_images']} images)",
            flush=True,
        )
        return results

    score(f"{args.checkpoint}, BN moving statistics as saved (OS {model.output_stride})")
    estimator = model
    if args.estimate_output_stride and args.estimate_output_stride != model.output_stride:
        estimator = checkpoints.load_model(
            args.checkpoint,
            num_classes=info["num_classes"],
            upsample_logits=True,
            output_stride=args.estimate_output_stride,
        )

    def batch_norms(network):
        return [
            layer
            for layer in iter_layers(network)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]

    bns = batch_norms(estimator)
    crop = tuple(int(v) for v in args.crop_size.split(","))
    stream = input_pipeline.make_train_dataset(
        args.dataset_dir,
        "train",
        batch_size=args.batch_size,
        crop_size=crop,
        min_scale=0.5,
        max_scale=1.5,
        seed=123,
        num_classes=info["num_classes"],
        pad_value=preprocessing.pad_pixel(model.backbone),
    )
    for k, (images, _) in enumerate(stream.take(args.batches)):
        for (
            layer
        ) in bns:  # moving = moving * m + batch * (1 - m): m = k / (k + 1) is the running mean
            layer.momentum = k / (k + 1.0)
        estimator(images, training=True)
    if estimator is not model:  # same variables at every stride: copy the statistics over
        for source, target in zip(bns, batch_norms(model)):
            assert source.path == target.path, (source.path, target.path)
            target.moving_mean.assign(source.moving_mean)
            target.moving_variance.assign(source.moving_variance)
    score(
        f"{args.checkpoint}, BN statistics re-estimated at OS {estimator.output_stride} over "
        f"{args.batches} train batches of {args.batch_size}, evaluated at OS "
        f"{model.output_stride}"
    )


if __name__ == "__main__":
    main()
