r"""Curves and tables of the CamVid runs (issue 8), for experiments/RESULTS.md.

    python experiments/camvid_report.py [--logdir runs/camvid] \
        [--torch_logdir runs/camvid_torchvision] [--out_dir runs/camvid/report]

Reads
  <logdir>/train/events.*                     training loss every --log_steps (deeplab.train)
  <logdir>/eval/val-os16/ckpt-N/results.json  val mIOU per checkpoint (deeplab.evaluate --watch)
  <torch_logdir>/history.jsonl                the torchvision reference (camvid_torchvision.py)
and writes into --out_dir: camvid_loss.png, camvid_miou.png (small: 4.8 x 3.2 in at 80 dpi) and
curves.json (the plotted numbers). Prints the numbers as markdown.
"""

import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def read_train_scalars(logdir, tags=("loss/total", "loss/cross_entropy")):
    """{tag: [(step, value), ...]} of the training summaries, one value per step (a resumed
    run's later value wins)."""
    from deeplab.logdir import summaries  # pylint: disable=import-outside-toplevel

    scalars = summaries.read_scalars(os.path.join(logdir, "train"))
    return {tag: sorted(dict(scalars.get(tag, [])).items()) for tag in tags}


def read_eval(logdir, tag="val-os16"):
    """{step: results.json contents} of every evaluated checkpoint."""
    found = {}
    for path in glob.glob(os.path.join(logdir, "eval", tag, "ckpt-*", "results.json")):
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        step = results.get("step") or int(re.search(r"ckpt-(\d+)", path).group(1))
        found[int(step)] = results
    return found


def read_torch(torch_logdir):
    """({step: training loss}, {step: evaluation record}) of the torchvision run's history.jsonl
    (a later evaluation of the same step wins)."""
    losses, evals = {}, {}
    path = os.path.join(torch_logdir, "history.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if "loss" in record:
                    losses[record["step"]] = record["loss"]
                if "miou" in record:
                    evals[record["step"]] = record
    return losses, evals


def smooth(points, window=5):
    out = []
    for i in range(len(points)):
        chunk = points[max(0, i - window + 1) : i + 1]
        out.append((points[i][0], sum(v for _, v in chunk) / len(chunk)))
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", default="runs/camvid")
    parser.add_argument("--torch_logdir", default="runs/camvid_torchvision")
    parser.add_argument("--out_dir", default=None)
    args = parser.parse_args()
    out_dir = args.out_dir or os.path.join(args.logdir, "report")
    os.makedirs(out_dir, exist_ok=True)

    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    train_scalars = read_train_scalars(args.logdir)
    ours_loss, ours_ce = train_scalars["loss/total"], train_scalars["loss/cross_entropy"]
    ours_eval = read_eval(args.logdir)
    ours_miou = sorted((step, results["miou"]) for step, results in ours_eval.items())
    torch_loss, torch_eval = read_torch(args.torch_logdir)
    torch_loss = sorted(torch_loss.items())
    torch_miou = sorted((step, record["miou"]) for step, record in torch_eval.items())

    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=80)
    if ours_ce:
        ax.plot(*zip(*smooth(ours_ce)), label="ours: weighted CE", lw=1)
    if torch_loss:
        ax.plot(*zip(*smooth(torch_loss)), label="torchvision: weighted CE", lw=1)
    ax.set_xlabel("step (batch 8)")
    ax.set_ylabel("train loss (5-point mean)")
    ax.set_title("CamVid, ResNet-50 from scratch", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "camvid_loss.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=80)
    if ours_miou:
        ax.plot(*zip(*ours_miou), "o-", label="ours (deeplab.evaluate)", ms=3, lw=1)
    if torch_miou:
        ax.plot(
            *zip(*torch_miou), "s-", label="torchvision (deeplab.evaluation.metrics)", ms=3, lw=1
        )
    ax.axhline(0.45, color="gray", ls="--", lw=0.8, label="floor 0.45")
    ax.set_xlabel("step (batch 8)")
    ax.set_ylabel("val mIOU (OS 16, scale 1)")
    ax.set_ylim(0, 0.6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "camvid_miou.png"))
    plt.close(fig)

    with open(os.path.join(out_dir, "curves.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "ours_loss": ours_loss,
                "ours_cross_entropy": ours_ce,
                "ours_val_miou": ours_miou,
                "torch_loss": torch_loss,
                "torch_val_miou": torch_miou,
            },
            f,
            indent=1,
        )
    print("| step | ours val mIOU | torchvision val mIOU |\n|---|---|---|")
    for step in sorted(set(ours_eval) | set(torch_eval)):
        a, b = ours_eval.get(step, {}).get("miou"), torch_eval.get(step, {}).get("miou")
        print(
            f"| {step} | {'' if a is None else f'{100 * a:.2f}'} | "
            f"{'' if b is None else f'{100 * b:.2f}'} |"
        )
    common = sorted(set(ours_eval) & set(torch_eval))
    if common:
        ours_last, torch_last = ours_eval[common[-1]], torch_eval[common[-1]]
        print(f"\n| class (IoU %, step {common[-1]}) | ours | torchvision |\n|---|---|---|")
        for name, theirs in zip(ours_last["class_names"], torch_last["iou"]):
            mine = ours_last["per_class_iou"].get(name)
            print(
                f"| {name} | {'n/a' if mine is None else f'{100 * mine:.2f}'} | "
                f"{100 * theirs:.2f} |"
            )
        print(
            f"| **mIOU** | **{100 * ours_last['miou']:.2f}** | **{100 * torch_last['miou']:.2f}** |"
        )
        print(
            f"| pixel accuracy | {100 * ours_last['pixel_accuracy']:.2f} | "
            f"{100 * torch_last['pixel_accuracy']:.2f} |"
        )
    print(f"wrote {out_dir}/camvid_loss.png, camvid_miou.png, curves.json")


if __name__ == "__main__":
    main()
