"""Training input throughput: crops per second per CPU core at the paper's settings (Sec. 4.1).

Runs ``deeplab.data.input_pipeline.make_train_dataset`` (decode -> random scale 0.5..2.0
step 0.25 -> pad -> 513x513 crop -> flip -> normalize, batched) on

- JPEG records of VOC-like 500x375 images written by the synthetic generator, and
- PNG records of CamVid (480x360), converted from ../shared/data/camvid when it is there,

with the process pinned to 1, 2, ... cores (each in a fresh subprocess, since TensorFlow sizes its
thread pools at start-up). After warm-up batches it counts crops for a fixed time and prints
crops/s, crops/s per pinned core (wall clock), and crops per CPU-second of the process (user +
system time of all its threads): the last one is what a core delivers when it is not shared, so it
is the robust figure on a busy machine (the wall-clock one is the honest figure on a quiet one). As
a peer in the same run it also times the unfused reference composition of the same ops (pad the
whole scaled image, crop, then normalize; ``--variant reference``), and prints the ratio.

Goal of issue 3: >= 50 crops/s per core, so a 16-core host out-feeds one modern GPU. Numbers on a
shared machine are noisy: run it when the machine is quiet, and read the load average it prints.

    python benchmarks/input_pipeline.py                       # both datasets, 1 core and all cores
    python benchmarks/input_pipeline.py --cores 1 --seconds 30 --datasets voc_like
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEFAULT_WORK_DIR = os.path.join(REPO, "benchmarks", "out", "input_pipeline")
CAMVID_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "camvid"))


def prepare(work_dir, num_images, camvid_dir):
    """Builds the record sets once (kept under benchmarks/out/, which git ignores)."""
    datasets = {}
    voc_dir = os.path.join(work_dir, "voc_like")
    if not os.path.exists(os.path.join(voc_dir, "dataset.json")):
        from deeplab.data import synthetic

        print(f"writing {num_images} VOC-like 500x375 JPEG records to {voc_dir}", file=sys.stderr)
        synthetic.build_synthetic_dataset(
            voc_dir, num_train=num_images, num_val=1, num_shards=4, seed=0, **synthetic.VOC_LIKE
        )
    datasets["voc_like"] = voc_dir
    if camvid_dir and os.path.isdir(camvid_dir):
        out = os.path.join(work_dir, "camvid")
        if not os.path.exists(os.path.join(out, "dataset.json")):
            from deeplab.data import convert
            from deeplab.data import datasets_info
            from deeplab.data import raw_datasets

            print(f"converting CamVid train from {camvid_dir} to {out}", file=sys.stderr)
            specs = raw_datasets.camvid_examples(camvid_dir, ["train"])
            convert.convert_splits(
                specs,
                out,
                dataset=datasets_info.camvid(),
                num_shards=4,
                progress=False,
            )
        datasets["camvid"] = out
    return datasets


def _reference_dataset(dataset_dir, batch_size, crop, seed):
    """The same augmentation as the unfused composition of the single ops (the peer being
    compared)."""
    import tensorflow as tf

    from deeplab.data import augment
    from deeplab.data import records
    from deeplab.data import tfrecord

    files = tfrecord.list_shards(dataset_dir, "train")
    key = tf.constant([0, seed], tf.int64)

    def transform(index, serialized):
        example = records.decode_example(serialized)
        s_scale, s_crop, s_flip = tf.unstack(
            augment.split_seed(tf.random.experimental.stateless_fold_in(key, index), 3)
        )
        image, label = augment.random_scale(example["image"], example["label"], s_scale)
        image, label = augment.pad_to_size(image, label, crop, crop)
        image, label = augment.random_crop(image, label, s_crop, crop, crop)
        image, label = augment.random_flip(image, label, s_flip)
        return tf.ensure_shape(augment.normalize(image), [crop, crop, 3]), tf.ensure_shape(
            label, [crop, crop]
        )

    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=len(files)
    )
    ds = ds.shuffle(256, seed=seed).repeat().enumerate()
    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(dataset_dir, variant, cores, batch_size, crop, seconds, warmup):
    """Runs in a subprocess pinned to ``cores`` CPUs; returns crops/s."""
    import tensorflow as tf

    from deeplab.data import input_pipeline

    if variant == "pipeline":
        ds = input_pipeline.make_train_dataset(
            dataset_dir,
            "train",
            batch_size=batch_size,
            crop_size=crop,
            seed=0,
            private_threadpool_size=cores,
        )
    else:
        ds = _reference_dataset(dataset_dir, batch_size, crop, 0)
        options = tf.data.Options()
        options.threading.private_threadpool_size = cores
        ds = ds.with_options(options)
    it = iter(ds)
    for _ in range(warmup):
        images, labels = next(it)
    assert images.shape == (batch_size, crop, crop, 3) and labels.shape == (batch_size, crop, crop)
    crops = 0
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        images, _ = next(it)
        crops += int(images.shape[0])
    wall = time.perf_counter() - start
    return crops / wall, crops / (_cpu_seconds() - cpu_start)


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work_dir", default=DEFAULT_WORK_DIR)
    parser.add_argument("--camvid_dir", default=CAMVID_DIR)
    parser.add_argument("--datasets", default="voc_like,camvid")
    parser.add_argument(
        "--variants",
        default="pipeline,reference",
        help="pipeline (make_train_dataset) and/or reference",
    )
    parser.add_argument(
        "--num_images", type=int, default=128, help="VOC-like training images to write"
    )
    parser.add_argument(
        "--cores", default=None, help="comma-separated core counts to pin to (default: 1 and all)"
    )
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=5, help="batches before timing")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        job = json.loads(args._child)
        os.sched_setaffinity(0, set(job["cpus"]))
        rate, per_cpu_second = measure(
            job["dir"],
            job["variant"],
            len(job["cpus"]),
            args.batch_size,
            args.crop,
            args.seconds,
            args.warmup,
        )
        print(json.dumps({"crops_per_s": rate, "crops_per_cpu_s": per_cpu_second}))
        return

    available = sorted(os.sched_getaffinity(0))
    core_counts = (
        [int(c) for c in args.cores.split(",")] if args.cores else sorted({1, len(available)})
    )
    datasets = prepare(args.work_dir, args.num_images, args.camvid_dir)
    print(
        f"host: {os.cpu_count()} CPUs, {len(available)} usable; "
        f"load average before: {os.getloadavg()}"
    )
    print(
        f"crop {args.crop}, batch {args.batch_size}, scale 0.5..2.0 step 0.25, flip; "
        f"{args.seconds:g} s after {args.warmup} warm-up batches"
    )
    print(
        f"{'dataset':10s} {'variant':10s} {'cores':>5s} "
        f"{'crops/s':>9s} {'per core':>9s} {'per CPU-s':>9s}"
    )
    results = {}
    for name in [d for d in args.datasets.split(",") if d in datasets]:
        for cores in core_counts:
            for variant in args.variants.split(","):
                job = {"dir": datasets[name], "variant": variant, "cpus": available[:cores]}
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--_child",
                        json.dumps(job),
                        "--crop",
                        str(args.crop),
                        "--batch_size",
                        str(args.batch_size),
                        "--seconds",
                        str(args.seconds),
                        "--warmup",
                        str(args.warmup),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"benchmark child failed for {job}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rate = result["crops_per_s"]
                results[(name, variant, cores)] = rate
                print(
                    f"{name:10s} {variant:10s} {cores:5d} {rate:9.1f} {rate / cores:9.1f} "
                    f"{result['crops_per_cpu_s']:9.1f}",
                    flush=True,
                )
    for (name, variant, cores), rate in results.items():
        if variant == "pipeline" and (name, "reference", cores) in results:
            print(
                f"{name} {cores} core(s): pipeline / reference = "
                f"{rate / results[(name, 'reference', cores)]:.2f}"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
