"""deeplab.training.distribute, and MirroredStrategy over 2 logical CPUs against one device."""

import json
import textwrap

import pytest

import harness
from deeplab.common.errors import ConfigError
from deeplab.data import synthetic
from deeplab.model.deeplabv3 import build_model
from deeplab.training import distribute


def test_default_strategy_and_errors():
    strategy = distribute.create_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy)
    assert distribute.worker_logdir("runs/x", strategy) == "runs/x"
    with pytest.raises(ConfigError, match="--strategy='nope': choose one of default, mirrored"):
        distribute.create_strategy("nope")
    # --strategy=parameter_server without TF_CONFIG: tests/test_parameter_server.py


def test_set_sync_batch_norm_reaches_every_bn_layer():
    model = build_model(backbone="resnet14_tiny", num_classes=3, aspp_filters=8)
    # resnet14_tiny: conv1 + 4 units x (3 convs + shortcut) = 17 BN; ASPP: 4 branches + pooling +
    # projection.
    assert distribute.set_sync_batch_norm(model, True) == 17 + 6
    layers = [l for l in model.backbone_model.layers if "bn" in l.name]
    assert layers and all(l.synchronized for l in layers)
    assert model.get_layer("aspp").projection[1].synchronized
    distribute.set_sync_batch_norm(model, False)
    assert not any(l.synchronized for l in layers)


# Runs in a fresh interpreter: the logical CPUs must be configured before TensorFlow starts.
_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    from deeplab.training import distribute
    distribute.configure_logical_cpus(2)
    from deeplab.training import trainer as train
    from deeplab.config.experiment import ExperimentConfig
    # Synchronized BN has no fused kernel: the single-device reference runs Keras' kernel too, so
    # the comparison isolates the distribution (the kernels differ by float rounding, which
    # tiny-batch BN amplifies by step 2): every run below has fused_batch_norm=False.
    data_dir, logdir = sys.argv[1], sys.argv[2]
    # No ASPP dropout: each replica draws its own dropout mask, which is not what is compared.
    model = {"backbone": "resnet14_tiny", "atrous_rates": (1, 2, 3), "aspp_filters": 16,
             "batch_norm_momentum": 0.9, "aspp_dropout": 0.0}
    # One MirroredStrategy for the whole process (see train.train's docstring).
    strategies = {"default": distribute.create_strategy("default"),
                  "mirrored": distribute.create_strategy("mirrored")}
    runs = {}
    for name, strategy, steps, extra in [
            ("default_frozen", "default", 6, {"freeze_batch_norm": True}),
            ("mirrored_frozen", "mirrored", 6, {"freeze_batch_norm": True}),
            ("default_bn", "default", 2, {}),
            ("mirrored_sync_bn", "mirrored", 2, {}),
            ("mirrored_replica_bn", "mirrored", 1, {})]:
        config = ExperimentConfig.create(
            dataset_dir=data_dir, logdir=f"{logdir}/{name}", model=dict(model, **extra),
            crop_size=(33, 33), batch_size=4, training_steps=steps, base_learning_rate=0.01,
            min_scale_factor=0.75, max_scale_factor=1.25, shuffle_buffer=16, deterministic=True,
            image_summary_steps=0, save_checkpoint_steps=100, log_steps=100, strategy=strategy,
            sync_batch_norm=(name == "mirrored_sync_bn"), seed=5, fused_batch_norm=False)
        result = train.train(config, strategies[strategy])
        runs[name] = {"replicas": result.num_replicas,
                      "loss": [result.history[s]["loss"] for s in sorted(result.history)]}
    print("RESULT " + json.dumps(runs))
""")


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    """The global batch of 4 is split 2 + 2 over two replicas; the loss is the mean over the
    global batch's valid pixels and the replicas' gradients are summed, so the run follows the
    single-device losses.

    Batch norm is what makes replicas differ: each replica normalizes with the statistics of its
    own 2 images. With BN frozen (stage two of Sec. 4.3) the runs agree step after step; with
    --sync_batch_norm the statistics are those of the global batch and the first steps agree
    too (later ones drift apart by float round-off amplified through tiny-batch BN, so only two
    are compared); without it even the first loss differs.
    """
    data_dir = str(tmp_path / "data")
    synthetic.build_synthetic_dataset(
        data_dir, num_train=8, num_val=2, image_size=(40, 40), num_classes=3, seed=4
    )
    proc = harness.run("-c", _MIRRORED_SCRIPT, data_dir, tmp_path / "runs", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert runs["default_frozen"]["replicas"] == 1 and runs["mirrored_frozen"]["replicas"] == 2
    assert runs["mirrored_frozen"]["loss"] == pytest.approx(
        runs["default_frozen"]["loss"], rel=1e-4
    )
    # the losses move (a comparison of constant sequences would prove nothing)
    assert max(runs["default_frozen"]["loss"]) - min(runs["default_frozen"]["loss"]) > 0.05
    # First step: the same statistics, the same loss. Second: round-off through tiny-batch BN
    # (seen: 2.7e-4 relative on an AVX-512 Xeon, below 1e-4 on an AVX2 EPYC); still ten times
    # closer than per-replica statistics give at the first step (checked next).
    sync, single = runs["mirrored_sync_bn"]["loss"], runs["default_bn"]["loss"]
    assert sync[0] == pytest.approx(single[0], rel=1e-4)
    assert sync[1] == pytest.approx(single[1], rel=1e-3)
    assert runs["mirrored_replica_bn"]["loss"][0] != pytest.approx(
        runs["default_bn"]["loss"][0], rel=1e-3
    )
