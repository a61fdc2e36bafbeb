"""Cheap checks of the speed benchmark harness (benchmarks/speed.py, benchmarks/peers/common.py).

No peer and no model runs here: only the FLOPs count, medians, the JSON line protocol, and the
table / ratio formatting.
"""

import importlib.util
import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, os.path.join(BENCH, "peers"))
common = _load("common", os.path.join(BENCH, "peers", "common.py"))
speed = _load("bench_speed", os.path.join(BENCH, "speed.py"))


@pytest.mark.parametrize(
    "depth, output_stride, gflops",
    [(101, 16, 140.5), (101, 8, 491.6), (50, 16, 99.2), (50, 8, 331.5)],
)
def test_analytic_conv_flops_match_the_recorded_figures(depth, output_stride, gflops):
    flops = common.deeplabv3_conv_flops(513, output_stride, depth=depth)
    assert flops / 1e9 == pytest.approx(gflops, abs=0.05)


def test_conv_flops_scale_with_batch_and_variants_add_work():
    one = common.deeplabv3_conv_flops(321, 16)
    assert common.deeplabv3_conv_flops(321, 16, batch=8) == 8 * one
    # torchvision's v1.5 ResNet (stride on the 3x3) measured by hooks: 142.12 GFLOPs at 513.
    v15 = common.deeplabv3_conv_flops(513, 16, stride_on_3x3=True)
    assert v15 / 1e9 == pytest.approx(142.1228, abs=1e-4)
    extra = common.deeplabv3_conv_flops(513, 16, stride_on_3x3=True, extra_head_conv=True)
    # The extra 3x3 256->256 conv at 33x33: 2 * 9 * 256 * 256 * 33 * 33 FLOPs (~0.64 GMACs).
    assert extra - v15 == 2 * 9 * 256 * 256 * 33 * 33
    assert common.training_flops(10) == 30
    with pytest.raises(ValueError):
        common.deeplabv3_conv_flops(513, 4)


def test_aspp_rates_double_at_output_stride_8():
    assert common.aspp_rates(16) == (6, 12, 18)
    assert common.aspp_rates(8) == (12, 24, 36)


def test_median_and_timing():
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    assert common.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        common.median([])
    ticks = iter(range(100))
    calls = []
    seconds = common.time_calls(
        lambda: calls.append(1), warmup=2, repeats=3, clock=lambda: float(next(ticks))
    )
    assert len(calls) == 5 and seconds == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        common.time_calls(lambda: None, warmup=0, repeats=0)


def test_protocol_round_trip(capsys):
    common.emit({"side": "ours", "seconds": [1.5, 1.25], "median_s": 1.375})
    out = "some framework log line\n" + capsys.readouterr().out + "trailing noise\n"
    assert common.parse_result(out) == {"side": "ours", "seconds": [1.5, 1.25], "median_s": 1.375}
    # The last result line wins.
    two = (
        common.PROTOCOL_PREFIX
        + json.dumps({"a": 1})
        + "\n"
        + common.PROTOCOL_PREFIX
        + json.dumps({"a": 2})
    )
    assert common.parse_result(two) == {"a": 2}
    with pytest.raises(ValueError):
        common.parse_result("no result here\n")
    with pytest.raises(ValueError):
        common.parse_result(common.PROTOCOL_PREFIX + "[1, 2]")
    with pytest.raises(ValueError):  # NaN is not JSON
        common.emit({"x": float("nan")})


def test_seeded_inputs_are_reproducible():
    np = pytest.importorskip("numpy")
    images, labels = common.seeded_inputs(2, 9, 21, seed=3)
    again, labels_again = common.seeded_inputs(2, 9, 21, seed=3)
    assert images.shape == (2, 9, 9, 3) and images.dtype == np.float32
    assert labels.shape == (2, 9, 9) and labels.dtype == np.int32
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert images.min() >= -1.0 and images.max() < 1.0
    assert set(np.unique(labels)) <= set(range(21)) | {255}
    assert common.argmax_agreement(np.eye(3)[None], np.eye(3)[None]) == 1.0
    assert common.argmax_agreement([[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]) == 0.5


def _result(side, seconds, rss=1000.0):
    return {
        "side": side,
        "seconds": seconds,
        "median_s": common.median(seconds),
        "peak_rss_mb": rss,
    }


def _record(measurement, side, seconds, rss=1000.0):
    return {"measurement": measurement, "side": side, "result": _result(side, seconds, rss)}


def test_summary_pools_rounds_and_picks_the_best_peer():
    records = [
        _record("infer_os16", "ours", [1.0, 3.0]),
        _record("infer_os16", "ours", [2.0]),
        _record("infer_os16", "torchvision", [0.5]),
        {"measurement": "infer_os16", "side": "modelgarden", "error": "exit 1: boom"},
        _record("train_b2", "ours", [4.0], 3072.0),
        _record("train_b2", "torchvision", [2.0], 2048.0),
        _record("train_b2", "modelgarden", [8.0], 1024.0),
    ]
    sides = ["ours", "torchvision", "modelgarden"]
    summary = speed.summarize(records, sides, ["infer_os16", "train_b2"])
    ours = summary["infer_os16"]["ours"]
    assert ours["median_s"] == 2.0 and ours["n"] == 3
    assert ours["gflops_per_s"] == pytest.approx(140.486996864 / 2.0)
    assert summary["infer_os16"]["modelgarden"]["median_s"] is None
    assert summary["infer_os16"]["modelgarden"]["errors"] == ["exit 1: boom"]
    assert speed.best_peer(summary["infer_os16"]) == ("torchvision", 0.5)
    assert speed.best_peer(summary["train_b2"], key="peak_rss_mb") == ("modelgarden", 1024.0)
    train_flops = 3 * common.deeplabv3_conv_flops(321, 16, batch=2)
    assert summary["train_b2"]["ours"]["gflops_per_s"] == pytest.approx(train_flops / 4.0 / 1e9)

    line = speed.ratio_line(summary, ["infer_os16", "train_b2"])
    assert line == (
        "ratios ours / best peer: infer_os16 4.00x (torchvision), "
        "train_b2 2.00x (torchvision), peak RSS train_b2 3.00x (modelgarden)"
    )
    text = speed.render_tables(
        summary, sides, ["infer_os16", "train_b2"], {"float32": 100.0, "bfloat16": None}
    )
    assert text.splitlines()[-1] == line
    assert "| ours | 2 s | 4 s | 3.00 GiB |" in text
    assert "| modelgarden | failed | 8 s | 1.00 GiB |" in text
    assert "| ours | 70 (70% of float32 peak) |" in text


def test_training_only_side_is_skipped_for_inference_and_reported_for_training():
    assert speed.runs_measurement("ours_no_recompute", "train_b8")
    assert not speed.runs_measurement("ours_no_recompute", "infer_os16")
    argv = speed.runner_command("ours_no_recompute", speed.MEASUREMENTS["train_b2"][1], 1, 3, 2)
    assert argv[0].endswith(".venv/bin/python") and argv[1].endswith("run_ours.py")
    assert argv[-2:] == ["--recompute-through", "none"]
    assert "--recompute-through" not in speed.runner_command(
        "ours", speed.MEASUREMENTS["train_b2"][1], 1, 3, 2
    )
    records = [
        _record("infer_os16", "ours", [1.0]),
        _record("infer_os16", "torchvision", [2.0]),
        _record("train_b2", "ours", [4.0], 3072.0),
        _record("train_b2", "torchvision", [2.0], 2048.0),
        _record("train_b2", "ours_no_recompute", [5.0], 1024.0),
    ]
    sides = ["ours", "torchvision", "ours_no_recompute"]
    summary = speed.summarize(records, sides, ["infer_os16", "train_b2"])
    text = speed.render_tables(
        summary, sides, ["infer_os16", "train_b2"], {"float32": 100.0, "bfloat16": None}
    )
    assert "| ours_no_recompute | n/a | 5 s | 1.00 GiB |" in text
    assert text.splitlines()[-1] == (
        "ratios ours / best peer: infer_os16 0.50x (torchvision), train_b2 2.00x (torchvision), "
        "peak RSS train_b2 1.50x (torchvision), ours_no_recompute train_b2 2.50x, peak RSS 0.50x"
    )


def test_formatting_helpers():
    assert speed.format_seconds(None) == "failed"
    assert speed.format_seconds(0.9134) == "0.913 s"
    assert speed.format_seconds(12.345) == "12.3 s"
    assert speed.format_seconds(123.4) == "123 s"
    assert speed.format_ratio(1.0, 2.0) == "0.50x"
    assert speed.format_ratio(None, 2.0) == "n/a"
    assert speed.format_ratio(1.0, None) == "n/a"
    assert speed.best_peer({"ours": {"median_s": 1.0}}) is None


def test_runner_command_and_arguments_agree():
    spec = speed.MEASUREMENTS["train_b8"][1]
    argv = speed.runner_command("modelgarden", spec, warmup=2, repeats=3, threads=2, xla=True)
    assert argv[0].endswith("peers/modelgarden/bin/python")
    args = common.runner_args(argv[2:])
    assert (args.task, args.output_stride, args.size, args.batch) == ("train", 16, 321, 8)
    assert (args.warmup, args.repeats, args.threads, args.xla) == (2, 3, 2, True)
    # No XLA flag for PyTorch.
    assert "--xla" not in speed.runner_command("torchvision", spec, 2, 3, 2, xla=True)
    quick = speed.parse_args(["--quick", "--bf16"])
    assert quick.repeats == 3 and "infer_os16_bf16" in quick.measurements
    assert speed.parse_args([]).repeats == 5
    with pytest.raises(SystemExit):
        speed.parse_args(["--sides", "ours,caffe"])


serving = _load("bench_serving", os.path.join(BENCH, "serving.py"))
run_serving = _load("bench_run_serving", os.path.join(BENCH, "peers", "run_serving.py"))


def test_serving_sides_agree_between_driver_and_runner():
    assert set(serving.SIDES) == set(run_serving.SIDES) == set(run_serving.ARTIFACTS)
    for side, floor in serving.FLOOR_OF.items():
        assert serving.SIDES[floor][1] == "floor" and serving.SIDES[side][1] != "floor"
    args = serving.parse_args(["--sides", "ours_savedmodel_f32,ort_f32", "--quick"])
    assert args.sides == ["ours_savedmodel_f32", "ort_f32"] and args.rounds == 1
    with pytest.raises(SystemExit):
        serving.parse_args(["--sides", "nope"])


def test_serving_summary_table_and_ratios():
    def record(median, peak, loaded=100.0):
        return {
            "seconds": [median, median],
            "load_s": 1.0,
            "rss_loaded_mb": loaded,
            "peak_rss_mb": peak,
            "versions": {},
        }

    records = {
        "ours_savedmodel_f32": [record(0.6, 1200.0), record(0.8, 1100.0)],
        "ours_tflite_int8": [record(0.3, 300.0)],
        "torch_eager": [record(0.9, 800.0)],
        "ort_f32": [record(0.5, 700.0)],
        "ort_int8": [record(0.4, 400.0)],
        "floor_tf": [record(0.0, 500.0)],
        "floor_ort": [record(0.0, 100.0)],
        "floor_torch": [record(0.0, 300.0)],
        "floor_litert": [record(0.0, 50.0)],
    }
    summary = serving.summarize(records)
    assert summary["ours_savedmodel_f32"]["median_s"] == pytest.approx(0.7)  # all calls pooled
    assert summary["ours_savedmodel_f32"]["peak_rss_mb"] == 1200.0  # the worst round
    line = serving.ratio_line(summary)
    assert line.startswith("ratios ours / best peer: ")
    assert "ours_savedmodel_f32 latency 1.40x ort_f32" in line  # 0.7 / 0.5
    assert "ours_savedmodel_f32 peak RSS 1.71x ort_f32" in line  # 1200 / 700
    # above the floors: (1200 - 500) / min(700 - 100, 800 - 300) = 700 / 500
    assert "ours_savedmodel_f32 peak RSS above floor 1.40x torch_eager" in line
    assert "ours_tflite_int8 latency 0.75x ort_int8" in line  # int8 against int8 only
    table = serving.render(summary, {"ort_int8": 0.9876})
    assert "| ours_savedmodel_f32 | float32 | 0.700 s |" in table
    assert "| 700 MiB |" in table and "argmax agreement ort_int8 vs ort_f32: 98.76%" in table
