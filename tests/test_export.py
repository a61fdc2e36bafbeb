"""deeplab.export_saved_model + deeplab.export.serving: a SavedModel that takes raw images.

The export is made once by the real binary (export_fixtures.shared_export) from a tiny run
with randomized BN statistics, averaging scales (1.0, 0.75) and the flip; it is reloaded in a
fresh Python process that imports only tensorflow and numpy.
"""

import io
import json
import os
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import export_fixtures as fx
import harness

# Runs in a fresh process: no project code, only tensorflow and numpy.
FRESH_PROCESS_SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf

    export_dir, inputs_path, outputs_path = sys.argv[1:4]
    inputs = np.load(inputs_path)
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    out = {}
    for key in ("batch_a", "batch_b"):
        result = serve(images=tf.constant(inputs[key]))
        out[key + "_semantic"] = result["semantic"].numpy()
        out[key + "_probabilities"] = result["probabilities"].numpy()
    encoded = loaded.signatures["serve_encoded_images"]
    pngs = [bytes(inputs["png_%d" % i]) for i in range(2)]
    out["encoded_semantic"] = encoded(image_bytes=tf.constant(pngs))["semantic"].numpy()
    info = loaded.signatures["class_info"]()
    report = {"signatures": sorted(loaded.signatures),
              "class_names": [n.decode() for n in info["class_names"].numpy()],
              "palette": info["palette"].numpy().tolist(),
              "project_modules": sorted(m for m in sys.modules if m.split(".")[0] == "deeplab"),
              "inputs": {k: [str(s.dtype.name), s.shape.as_list()]
                         for k, s in serve.structured_input_signature[1].items()},
              "outputs": {k: [str(s.dtype.name), s.shape.as_list()]
                          for k, s in serve.structured_outputs.items()},
              "errors": {}}

    def attempt(name, call):
        try:
            call()
            report["errors"][name] = None
        except Exception as error:  # what a user sees
            report["errors"][name] = [type(error).__name__, str(error)[:1500]]

    batch = inputs["batch_a"]
    attempt("float_tensor", lambda: serve(images=tf.constant(batch.astype(np.float32))))
    attempt("float_numpy", lambda: serve(images=batch.astype(np.float32)))
    attempt("rank_3", lambda: serve(images=tf.constant(batch[0])))
    attempt("rank_3_numpy", lambda: serve(images=batch[0]))
    attempt("rank_5", lambda: serve(images=tf.zeros([1, 9, 9, 3, 1], tf.uint8)))
    attempt("four_channels", lambda: serve(images=tf.zeros([1, 9, 9, 4], tf.uint8)))
    attempt("four_channels_numpy", lambda: serve(images=np.zeros([1, 9, 9, 4], np.uint8)))
    attempt("empty_image", lambda: serve(images=tf.zeros([1, 0, 9, 3], tf.uint8)))
    attempt("mixed_sizes",
            lambda: encoded(image_bytes=tf.constant([pngs[0], bytes(inputs["png_small"])])))
    attempt("not_an_image", lambda: encoded(image_bytes=tf.constant([pngs[0], b"hello"])))
    attempt("empty_batch", lambda: serve(images=tf.zeros([0, 9, 9, 3], tf.uint8)))
    attempt("too_many_pixels", lambda: serve(images=tf.zeros([1, 4097, 4096, 3], tf.uint8)))
    attempt("no_images", lambda: encoded(image_bytes=tf.constant([], tf.string)))
    np.savez(outputs_path, **out)
    with open(outputs_path + ".json", "w") as f:
        json.dump(report, f)
""")


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Runs the export in a fresh process on two batches (odd and even sizes)."""
    export = fx.shared_export(tmp_path_factory)
    inputs = {
        "batch_a": fx.structured_images(2, (33, 41), seed=7),
        "batch_b": fx.structured_images(1, (46, 30), seed=8),
    }
    inputs.update({f"png_{i}": _png(inputs["batch_a"][i]) for i in range(2)})
    inputs["png_small"] = _png(inputs["batch_a"][0][:20])
    root = tmp_path_factory.mktemp("fresh")
    script, in_path, out_path = root / "reload.py", str(root / "in.npz"), str(root / "out.npz")
    script.write_text(FRESH_PROCESS_SCRIPT)
    np.savez(in_path, **inputs)
    # No PYTHONPATH to the repository: the reload cannot import project code even by accident.
    result = harness.run(
        script, export["export_dir"], in_path, out_path, cwd=root, env={"PYTHONPATH": None}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out_path + ".json", encoding="utf-8") as f:
        report = json.load(f)
    return {
        "export": export,
        "inputs": inputs,
        "outputs": dict(np.load(out_path)),
        "report": report,
    }


@pytest.mark.slow
def test_fresh_process_reload_matches_keras(fresh):
    model = fresh["export"]["model"]
    report = fresh["report"]
    assert report["project_modules"] == []
    assert report["signatures"] == ["class_info", "serve_encoded_images", "serving_default"]
    assert report["inputs"] == {"images": ["uint8", [None, None, None, 3]]}
    assert report["outputs"] == {
        "probabilities": ["float32", [None, None, None, fx.NUM_CLASSES]],
        "semantic": ["int32", [None, None, None]],
    }
    for key in ("batch_a", "batch_b"):
        images = fresh["inputs"][key]
        expected = fx.keras_probabilities(model, images, fx.EXPORT_SCALES, fx.EXPORT_FLIP)
        probabilities = fresh["outputs"][key + "_probabilities"]
        semantic = fresh["outputs"][key + "_semantic"]
        assert probabilities.shape == images.shape[:3] + (fx.NUM_CLASSES,)
        assert semantic.shape == images.shape[:3] and semantic.dtype == np.int32
        assert np.abs(probabilities - expected).max() <= 1e-4
        assert (semantic == expected.argmax(-1)).mean() >= 0.999
        # The model is not trivial: several classes are predicted.
        assert len(np.unique(semantic)) >= 2


@pytest.mark.slow
def test_export_averages_scales_and_flip(fresh):
    # Guards the comparison above: without the scales and flip the probabilities differ, so an
    # export that dropped them would have failed it.
    images = fresh["inputs"]["batch_a"]
    single = fx.keras_probabilities(fresh["export"]["model"], images, (1.0,), False)
    assert np.abs(fresh["outputs"]["batch_a_probabilities"] - single).max() > 1e-2


@pytest.mark.slow
def test_encoded_signature_decodes_png(fresh):
    np.testing.assert_array_equal(
        fresh["outputs"]["encoded_semantic"], fresh["outputs"]["batch_a_semantic"]
    )


@pytest.mark.slow
def test_class_names_are_an_asset_and_a_signature(fresh):
    export_dir = fresh["export"]["export_dir"]
    assert fresh["report"]["class_names"] == fx.CLASS_NAMES
    assert fresh["report"]["palette"] == fx.PALETTE
    with open(os.path.join(export_dir, "assets", "class_names.txt"), encoding="utf-8") as f:
        assert f.read().split() == fx.CLASS_NAMES
    with open(os.path.join(export_dir, "assets", "deeplab_export.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert info["num_classes"] == fx.NUM_CLASSES
    assert info["scales"] == list(fx.EXPORT_SCALES) and info["flip"] is fx.EXPORT_FLIP
    assert info["output_stride"] == 16 and info["step"] == 5
    assert info["model_config"]["backbone"] == "resnet14_tiny"


@pytest.mark.slow
def test_bad_inputs_give_readable_errors(fresh):
    errors = fresh["report"]["errors"]
    # A float tensor cannot enter a uint8 signature: TensorFlow rejects the call.
    kind, message = errors["float_tensor"]
    assert kind == "InvalidArgumentError" and "uint8" in message and "float" in message
    # A float numpy array is converted to uint8 by TensorFlow's argument binding before the
    # graph runs (documented in the README): no error, so callers must send uint8 pixels.
    assert errors["float_numpy"] is None
    # numpy arrays of another shape: TensorFlow's argument binding names the expected spec.
    for name in ("rank_3_numpy", "four_channels_numpy"):
        kind, message = errors[name]
        assert kind == "TypeError" and "(None, None, None, 3)" in message and "uint8" in message
    # Tensors reach the graph, whose assertion names the signature, the rule and the shape.
    expected = "serving_default expects uint8 RGB images of shape [N, H, W, 3] with N, H, W > 0"
    for name, shape in (
        ("rank_3", "[33 41 3]"),
        ("rank_5", "[1 9 9 3 1]"),
        ("four_channels", "[1 9 9 4]"),
        ("empty_image", "[1 0 9 3]"),
        ("empty_batch", "[0 9 9 3]"),
    ):
        kind, message = errors[name]
        assert kind == "InvalidArgumentError", (name, message)
        assert expected in message and f"got shape] {shape}" in message, (name, message)
    kind, message = errors["mixed_sizes"]
    assert kind == "InvalidArgumentError" and "same height and width" in message
    kind, message = errors["not_an_image"]
    assert kind == "InvalidArgumentError"
    assert (
        "serve_encoded_images: not a JPEG, PNG, GIF, BMP or WebP file: image_bytes index] [1] [of] "
        "[2] [starts with] [hello]"
    ) in message, message
    kind, message = errors["too_many_pixels"]
    assert kind == "InvalidArgumentError"
    assert (
        "serving_default: N x H x W exceeds the cap of 16777216 pixels per call set at "
        "export (--serving_max_pixels)"
    ) in message and "[1 4097 4096 3]" in message
    kind, message = errors["no_images"]
    assert kind == "InvalidArgumentError" and "at least one encoded image" in message


@pytest.mark.slow
def test_saved_model_cli_shows_the_documented_signatures(fresh):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this Python")
    result = harness.run(
        [cli, "show"],
        "--dir",
        fresh["export"]["export_dir"],
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())
    assert "inputs['images'] tensor_info: dtype: DT_UINT8 shape: (-1, -1, -1, 3)" in text
    assert "outputs['semantic'] tensor_info: dtype: DT_INT32 shape: (-1, -1, -1)" in text
    assert (
        f"outputs['probabilities'] tensor_info: dtype: DT_FLOAT shape: "
        f"(-1, -1, -1, {fx.NUM_CLASSES})"
    ) in text


def test_export_flag_errors_name_the_flag(tmp_path, tmp_path_factory):
    from deeplab.common.errors import ConfigError
    from deeplab.common.errors import UserError
    from deeplab.export.saved_model import ExportOptions
    from deeplab.export.saved_model import run_export

    with pytest.raises(ConfigError, match="--quantize=int8 needs --tflite"):
        run_export(str(tmp_path), str(tmp_path / "e"), ExportOptions(quantize="int8"))
    # A float model's int8 export is calibrated on images: refused before anything is written.
    run = fx.shared_tiny_run(tmp_path_factory)["checkpoint"]
    with pytest.raises(
        ConfigError, match="--quantize=int8 needs --dataset_dir .* --quantize_aware"
    ):
        run_export(run, str(tmp_path / "e"), ExportOptions(tflite=True, quantize="int8"))
    assert not os.path.exists(tmp_path / "e")
    with pytest.raises(UserError, match="holds no checkpoint"):
        run_export(str(tmp_path), str(tmp_path / "e"))


@pytest.mark.slow
def test_binary_reports_a_missing_checkpoint(tmp_path):
    result = harness.run(
        "deeplab.export_saved_model",
        f"--checkpoint={tmp_path / 'nothing'}",
        f"--export_dir={tmp_path / 'e'}",
        timeout=120,
    )
    assert result.returncode == 1  # a failure: the file is missing (2 is a usage error)
    assert "deeplab.export_saved_model: error: --checkpoint=" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_exported_files_are_readable_by_others_as_the_umask_allows(tmp_path_factory):
    """The SavedModel, the .tflite file and its sidecar carry the mode a plain open() gives
    (0666 minus the umask), not mkstemp's 0600: a serving process of another user can read
    them."""
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    export = fx.shared_export(tmp_path_factory)
    tflite_path = fx.shared_float_tflite(tmp_path_factory)
    paths = [tflite_path, os.path.splitext(tflite_path)[0] + ".json"]
    for root, _, names in os.walk(export["export_dir"]):
        paths += [os.path.join(root, name) for name in names]
    assert any(p.endswith("saved_model.pb") for p in paths)
    for path in paths:
        assert os.stat(path).st_mode & 0o777 == expected, (path, oct(os.stat(path).st_mode))


@pytest.mark.slow
def test_bfloat16_export_stores_bfloat16_weights_and_agrees_with_float32(
    tmp_path_factory, tmp_path
):
    """--serving_dtype=bfloat16: the SavedModel holds its weights once, in bfloat16 (half the
    variables' bytes of the float32 export), outputs float32 probabilities, and gives the float32
    export's class on >= 99% of the pixels."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.export.saved_model import ExportOptions  # pylint: disable=import-outside-toplevel
    from deeplab.export.saved_model import run_export  # pylint: disable=import-outside-toplevel

    run_dir = fx.shared_tiny_run(tmp_path_factory)["run_dir"]
    exports = {}
    for dtype in ("float32", "bfloat16"):
        exports[dtype] = str(tmp_path / dtype)
        run_export(run_dir, exports[dtype], ExportOptions(serving_dtype=dtype))
    images = np.stack(fx.structured_images(2, (40, 48), seed=3))
    results, sizes = {}, {}
    for dtype, path in exports.items():
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        stored = {
            k: d
            for k, d in reader.get_variable_to_dtype_map().items()
            if d.is_floating and "OBJECT_GRAPH" not in k
        }
        assert {d.name for d in stored.values()} == {dtype}, dtype
        sizes[dtype] = sum(reader.get_tensor(k).nbytes for k in stored)
        loaded = tf.saved_model.load(path)
        results[dtype] = loaded.signatures["serving_default"](images=tf.constant(images))
    assert sizes["bfloat16"] * 2 == sizes["float32"]
    assert results["bfloat16"]["probabilities"].dtype == tf.float32
    agreement = np.mean(
        results["bfloat16"]["semantic"].numpy() == results["float32"]["semantic"].numpy()
    )
    assert agreement >= 0.99, agreement
    with open(
        os.path.join(exports["bfloat16"], "assets", "deeplab_export.json"), encoding="utf-8"
    ) as handle:
        assert json.load(handle)["serving_dtype"] == "bfloat16"
    from deeplab.common.errors import ConfigError  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError, match="--serving_dtype applies to the SavedModel"):
        run_export(
            run_dir,
            str(tmp_path / "x"),
            ExportOptions(saved_model=False, tflite=True, serving_dtype="bfloat16"),
        )


@pytest.mark.slow
def test_saved_model_is_lean_one_graph_per_signature_and_no_layer_objects(tmp_path_factory):
    """Issue 22: the export holds each signature's graph once and the variables as a flat list,
    not the Keras object tree (which cost 149 MiB of a server's RSS for ResNet-101)."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel

    export = fx.shared_export(tmp_path_factory)
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export["export_dir"], "saved_model.pb"), "rb") as handle:
        saved.ParseFromString(handle.read())
    graph = saved.meta_graphs[0]
    names = [f.signature.name for f in graph.graph_def.library.function]
    for method in ("serve_images", "serve_encoded_images", "class_info"):
        assert sum(n.startswith(f"__inference_{method}_") for n in names) == 1, (method, names)
    num_variables = len(export["model"].weights)
    nodes = len(graph.object_graph_def.nodes)
    assert nodes <= num_variables + 20, (nodes, num_variables)
