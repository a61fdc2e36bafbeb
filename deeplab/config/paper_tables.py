"""The paper's result tables as data: every row, the command that reproduces it, the paper's mIOU.

This is the one place that says which experiment flagfile and which flag overrides give each row
of Tables 1-13 of Chen et al. 2017 (Table 11's rows, asynchronous training, also say which
cluster ``deeplab.launch_local`` starts). ``deeplab.reproduce`` runs the rows from here,
``experiments/README.md`` is generated from here (``python -m deeplab.reproduce
--update_readme``), and ``tests/test_experiments.py`` checks every row against the
transcription of the paper in PAPER_TABLES.md.

A row is a flagfile plus overrides of the experiment config (``deeplab/config/experiment.py``:
setting name -> value), written as ``--flagfile=<flagfile> --<setting>=<value>...`` for both
``deeplab.train`` and ``deeplab.evaluate``. Rows whose overrides change only the eval section share
their training run: Tables 4, 6, 10 and 12 evaluate one checkpoint several ways. Rows whose
training differs from the flagfile's carry their own ``--logdir`` so that no two training
configurations write into one folder.

Imports nothing but the standard library.
"""

import dataclasses

EXPERIMENTS_DIR = "experiments"

# Eval-only overrides, named once because Tables 4, 6 and 12 reuse them.
_MS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
_OS16 = dict(eval_output_stride=16, eval_scales=(1.0,), eval_flip=False)
_OS8 = dict(eval_output_stride=8, eval_scales=(1.0,), eval_flip=False)
_OS8_MS = dict(eval_output_stride=8, eval_scales=_MS, eval_flip=False)
_OS8_MS_FLIP = dict(eval_output_stride=8, eval_scales=_MS, eval_flip=True)

_RESNET50_WEIGHTS = "weights/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row (or cell) of a paper table.

    Attributes:
      key: the row as PAPER_TABLES.md names it: the cells other than mIOU joined by " | "
        (a column header value for Tables 1 and 9, "row | column" for the grids of Tables 2
        and 3, the model name for Tables 7 and 13).
      paper_miou: the paper's mIOU in percent, exactly as printed.
      flagfile: the experiment flagfile, relative to the repository root.
      overrides: the experiment settings the row changes from its flagfile, as
        ``((name, value), ...)`` of ``deeplab.config.experiment.ExperimentConfig`` fields
        (:func:`settings` builds it from keywords); :meth:`args` writes them as flags.
      split: "val" (scored locally) or "test" (scored by the dataset's evaluation server).
      reproducible: False when the row needs something that is not public (JFT-300M).
      note: why a row is not reproducible, or a caveat about the recipe.
      server_args: for test-set rows, the ``deeplab.visualize`` flags that select the test
        images (raw files in the WORKSPACE.md layout; the converters write no test split).
      launch: for rows trained by a cluster of processes (Table 11), the
        ``deeplab.launch_local`` flags (``--workers=N --ps=M``); empty = one process.
    """

    key: str
    paper_miou: float
    flagfile: str
    overrides: tuple = ()  # ((setting, value), ...): see settings()
    split: str = "val"
    reproducible: bool = True
    note: str = ""
    server_args: tuple = ()
    launch: tuple = ()

    def args(self):
        """``--flagfile=...`` followed by the overrides as flags: the flags of train and
        evaluate (later flags win in absl)."""
        return (f"--flagfile={self.flagfile}",) + tuple(flag_arg(n, v) for n, v in self.overrides)

    def settings(self):
        """The overrides as ``{setting: value}``."""
        return dict(self.overrides)


@dataclasses.dataclass(frozen=True)
class Table:
    """One table of the paper.

    Attributes:
      number: table number in the paper.
      title: what the table studies.
      columns: names of the parts of a row key (for labels; "" shows the value alone).
      rows: the :class:`Row` s in the paper's order (grids row by row).
      best_flagfile: the flagfile that encodes the table's best row.
    """

    number: int
    title: str
    columns: tuple
    rows: tuple
    best_flagfile: str

    def label(self, row):
        """A readable label of ``row``,
        e.g. "MG (1, 2, 4), ASPP rates (6, 12, 18), image pooling yes"."""
        parts = row.key.split(" | ")
        return ", ".join(f"{c} {p}" if c else p for c, p in zip(self.columns, parts))


def settings(**values):
    """A row's overrides: settings of the experiment config, in the order given."""
    return tuple(values.items())


def flag_arg(name, value):
    """One setting as the command-line flag that sets it: ``--name=value``, ``--name`` /
    ``--noname`` for a boolean, a sequence joined by commas (as absl writes a list flag)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (tuple, list)):
        value = ",".join(str(v) for v in value)
    return f"--{name}={value}"


def _flagfile(name):
    return f"{EXPERIMENTS_DIR}/{name}.flags"


def _table1():
    flagfile = _flagfile("table1")
    values = {8: 75.18, 16: 73.88, 32: 70.06, 64: 59.99, 128: 42.34, 256: 20.29}
    rows = []
    for output_stride, miou in values.items():
        overrides = (
            ()
            if output_stride == 8
            else settings(output_stride=output_stride, logdir=f"runs/table1_os{output_stride}")
        )
        rows.append(Row(str(output_stride), miou, flagfile, overrides))
    return Table(
        1,
        "Going deeper with atrous convolution: ResNet-50 + block7 (cascade), output "
        "stride for training and evaluation, VOC val",
        ("OS",),
        tuple(rows),
        flagfile,
    )


def _table2():
    flagfile = _flagfile("table2")
    values = {
        "ResNet-50": (64.81, 72.14, 74.29, 73.88),
        "ResNet-101": (68.39, 73.21, 75.34, 75.76),
    }
    rows = []
    for network, mious in values.items():
        for extra_blocks, miou in enumerate(mious):
            block = f"block{4 + extra_blocks}"
            overrides = {}
            if network == "ResNet-50":
                overrides.update(backbone="resnet50", imagenet_weights=_RESNET50_WEIGHTS)
            if extra_blocks != 3:
                overrides["num_cascaded_blocks"] = extra_blocks
            if overrides:
                overrides["logdir"] = f"runs/table2_{network.lower().replace('-', '')}_{block}"
            rows.append(Row(f"{network} | {block}", miou, flagfile, settings(**overrides)))
    return Table(
        2,
        "Cascaded blocks (block5-7 after block4) at output stride 16, no multi-grid, VOC val",
        ("", ""),
        tuple(rows),
        flagfile,
    )


def _table3():
    flagfile = _flagfile("table3")
    values = {
        (1, 1, 1): (68.39, 73.21, 75.34, 75.76),
        (1, 2, 1): (70.23, 75.67, 76.09, 76.66),
        (1, 2, 3): (73.14, 75.78, 75.96, 76.11),
        (1, 2, 4): (73.45, 75.74, 75.85, 76.02),
        (2, 2, 2): (71.45, 74.30, 74.70, 74.62),
    }
    rows = []
    for grid, mious in values.items():
        for extra_blocks, miou in enumerate(mious):
            block = f"block{4 + extra_blocks}"
            overrides = {}
            if grid != (1, 2, 1):
                overrides["multi_grid"] = grid
            if extra_blocks != 3:
                overrides["num_cascaded_blocks"] = extra_blocks
            if overrides:
                overrides["logdir"] = f"runs/table3_mg{''.join(map(str, grid))}_{block}"
            rows.append(
                Row(
                    f"({', '.join(map(str, grid))}) | {block}",
                    miou,
                    flagfile,
                    settings(**overrides),
                )
            )
    return Table(
        3,
        "Multi-grid unit rates in block4-7, ResNet-101, output stride 16, VOC val",
        ("MG", ""),
        tuple(rows),
        flagfile,
    )


def _table4():
    flagfile = _flagfile("table4")
    rows = (
        Row("OS 16", 76.66, flagfile, settings(**_OS16)),
        Row("OS 8", 78.05, flagfile, settings(**_OS8)),
        Row("OS 8 + MS", 78.93, flagfile, settings(**_OS8_MS)),
        Row("OS 8 + MS + Flip", 79.35, flagfile),
    )
    return Table(
        4,
        "Inference strategy for block7 + MG (1, 2, 1) trained at output stride 16 "
        "(one training run), VOC val",
        ("",),
        rows,
        flagfile,
    )


def _table5():
    flagfile = _flagfile("table5")
    rows = (
        Row(
            "(1, 1, 1) | (6, 12, 18) | no",
            75.36,
            flagfile,
            settings(multi_grid=(1, 1, 1), image_pooling=False, logdir="runs/table5_mg111"),
        ),
        Row(
            "(1, 2, 1) | (6, 12, 18) | no",
            75.93,
            flagfile,
            settings(multi_grid=(1, 2, 1), image_pooling=False, logdir="runs/table5_mg121"),
        ),
        Row(
            "(1, 2, 4) | (6, 12, 18) | no",
            76.58,
            flagfile,
            settings(image_pooling=False, logdir="runs/table5_mg124"),
        ),
        Row(
            "(1, 2, 4) | (6, 12, 18, 24) | no",
            76.46,
            flagfile,
            settings(
                atrous_rates=(6, 12, 18, 24), image_pooling=False, logdir="runs/table5_mg124_rate24"
            ),
        ),
        Row("(1, 2, 4) | (6, 12, 18) | yes", 77.21, flagfile),
    )
    return Table(
        5,
        "ASPP after block4 at output stride 16, ResNet-101, VOC val",
        ("MG", "ASPP rates", "image pooling"),
        rows,
        flagfile,
    )


def _table6():
    final_model = _flagfile("table5")
    rows = (
        Row("OS 16", 77.21, final_model, settings(**_OS16)),
        Row("OS 8", 78.51, final_model, settings(**_OS8)),
        Row("OS 8 + MS", 79.45, final_model, settings(**_OS8_MS)),
        Row("OS 8 + MS + Flip", 79.77, final_model, settings(**_OS8_MS_FLIP)),
        Row(
            "OS 8 + MS + Flip, COCO-pretrained",
            82.70,
            _flagfile("table6"),
            note="fine-tuned from coco_pretrain.flags with base_lr 0.0001, Sec. 4.3",
        ),
    )
    return Table(
        6,
        "Inference strategy for the final model (Table 5 best, one training run) and "
        "COCO pretraining, VOC val",
        ("",),
        rows,
        _flagfile("table6"),
    )


_VOC_TEST_IMAGES = (
    "--vis_images=raw/VOCdevkit/VOC2012/JPEGImages/*.jpg",
    "--vis_image_list=raw/VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt",
)
_CITYSCAPES_TEST_IMAGES = ("--vis_images=raw/cityscapes/leftImg8bit/test/*/*_leftImg8bit.png",)


def _table7():
    flagfile = _flagfile("table7")
    rows = (
        Row(
            "DeepLabv3",
            85.7,
            flagfile,
            split="test",
            note="stage 2 of coco_pretrain -> table6 -> table7; submit "
            "results/VOC2012/Segmentation/comp6_test_cls to the VOC server",
            server_args=_VOC_TEST_IMAGES,
        ),
        Row(
            "DeepLabv3-JFT",
            86.9,
            flagfile,
            split="test",
            reproducible=False,
            note="needs a ResNet-101 pretrained on JFT-300M, which is not public",
        ),
    )
    return Table(7, "PASCAL VOC 2012 test (evaluation server)", ("",), rows, flagfile)


def _table8():
    flagfile = _flagfile("table8")
    rows = (
        Row("513 | yes | yes", 77.21, flagfile),
        Row(
            "513 | yes | no",
            75.95,
            flagfile,
            settings(freeze_batch_norm=True, logdir="runs/table8_frozen_bn"),
        ),
        Row(
            "513 | no (groundtruth downsampled) | yes",
            76.01,
            flagfile,
            settings(upsample_logits=False, logdir="runs/table8_labels_downsampled"),
        ),
        Row(
            "321 | no | yes",
            67.22,
            flagfile,
            settings(crop_size=321, upsample_logits=False, logdir="runs/table8_crop321"),
        ),
    )
    return Table(
        8,
        "Training protocol at output stride 16 (train and eval), VOC val",
        ("crop", "upsample logits", "fine-tune BN"),
        rows,
        flagfile,
    )


def _table9():
    flagfile = _flagfile("table9")
    values = {4: 64.43, 8: 75.76, 12: 76.49, 16: 77.21}
    rows = []
    for batch, miou in values.items():
        overrides = (
            () if batch == 16 else settings(batch_size=batch, logdir=f"runs/table9_batch{batch}")
        )
        rows.append(Row(str(batch), miou, flagfile, overrides))
    return Table(
        9,
        "Training batch size, output stride 16 (train and eval), VOC val",
        ("batch",),
        tuple(rows),
        flagfile,
    )


def _table10():
    flagfile = _flagfile("table10")
    # Largest batch that fit the paper's GPUs at each training output stride.
    train = {
        8: settings(output_stride=8, batch_size=6, logdir="runs/table10_train_os8"),
        16: (),
        32: settings(output_stride=32, batch_size=24, logdir="runs/table10_train_os32"),
    }
    values = {
        (8, 16): 74.45,
        (16, 16): 77.21,
        (32, 16): 75.90,
        (8, 8): 75.62,
        (16, 8): 78.51,
        (32, 8): 75.75,
    }
    rows = []
    for (train_os, eval_os), miou in values.items():
        overrides = train[train_os] + (settings(eval_output_stride=16) if eval_os == 16 else ())
        rows.append(Row(f"{train_os} | {eval_os}", miou, flagfile, overrides))
    return Table(
        10,
        "Training vs evaluation output stride (batch 6, 16, 24 at train OS 8, 16, 32), VOC val",
        ("train OS", "eval OS"),
        tuple(rows),
        flagfile,
    )


def table11_ps_tasks(replicas):
    """Parameter servers for ``replicas`` asynchronous workers: one per 8 workers (at least one).

    The paper does not say; ResNet-101 DeepLabv3's ~58M parameters (233 MB) are pulled and
    pushed by every worker step, so the ps tasks grow with the workers.
    """
    return max(1, int(replicas) // 8)


def _table11():
    flagfile = _flagfile("table11")
    values = {1: 77.21, 2: 77.15, 4: 76.79, 8: 77.02, 16: 77.18, 32: 76.69}
    relative_time = {1: "1.00", 2: "0.50", 4: "0.25", 8: "0.13", 16: "0.06", 32: "0.03"}
    rows = []
    for replicas, miou in values.items():
        overrides = () if replicas == 1 else settings(logdir=f"runs/table11_{replicas}replicas")
        rows.append(
            Row(
                str(replicas),
                miou,
                flagfile,
                overrides,
                note=f"paper: relative training time {relative_time[replicas]}",
                launch=(f"--workers={replicas}", f"--ps={table11_ps_tasks(replicas)}"),
            )
        )
    return Table(
        11,
        "Asynchronous training with N parameter-server replicas (workers), each "
        "step one worker's batch of 16, 30K steps in all, output stride 16, VOC val",
        ("replicas",),
        tuple(rows),
        flagfile,
    )


def _table12():
    flagfile = _flagfile("table12")
    rows = (
        Row("OS 16", 77.23, flagfile, settings(**_OS16)),
        Row("OS 8", 77.82, flagfile, settings(**_OS8)),
        Row(
            "MS (0.75, 1, 1.25)",
            79.06,
            flagfile,
            settings(eval_flip=False),
            note="evaluated at OS 8: the paper's table does not say",
        ),
        Row(
            "MS (0.75, 1, 1.25) + Flip",
            79.30,
            flagfile,
            note="evaluated at OS 8: the paper's table does not say",
        ),
    )
    return Table(
        12, "Cityscapes val, trained on train_fine only (one training run)", ("",), rows, flagfile
    )


def _table13():
    flagfile = _flagfile("table13")
    rows = (
        Row(
            "DeepLabv3",
            81.3,
            flagfile,
            split="test",
            note="trained on trainval_coarse; submit cityscapes_results/*_pred_labelIds.png "
            "to the Cityscapes server",
            server_args=_CITYSCAPES_TEST_IMAGES,
        ),
    )
    return Table(13, "Cityscapes test (evaluation server)", ("",), rows, flagfile)


TABLES = {
    t.number: t
    for t in (
        _table1(),
        _table2(),
        _table3(),
        _table4(),
        _table5(),
        _table6(),
        _table7(),
        _table8(),
        _table9(),
        _table10(),
        _table11(),
        _table12(),
        _table13(),
    )
}

# Flagfiles that are not a table's row on their own: COCO pretraining, the first stage of
# Table 6's last row and hence of Table 7.
EXTRA_FLAGFILES = (_flagfile("coco_pretrain"),)


def get_table(number):
    """The :class:`Table` of the paper's table ``number`` (1-13)."""
    try:
        return TABLES[int(number)]
    except (KeyError, ValueError):
        raise ValueError(f"--table={number}: choose one of {sorted(TABLES)}") from None


def all_flagfiles():
    """Every flagfile the tables use, plus the stages they are initialized from."""
    names = {row.flagfile for table in TABLES.values() for row in table.rows}
    return tuple(sorted(names | set(EXTRA_FLAGFILES)))


__all__ = [
    "Row",
    "Table",
    "settings",
    "flag_arg",
    "TABLES",
    "EXTRA_FLAGFILES",
    "get_table",
    "all_flagfiles",
    "table11_ps_tasks",
]
