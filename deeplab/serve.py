r"""A local demo of a model: a page to drop a photo on and a JSON API.

    python -m deeplab.serve --model=exports/quickstart            # http://127.0.0.1:8080/
    python -m deeplab.serve --model=weights/mnv2_pascal --port=9000
    curl --data-binary @photo.jpg http://127.0.0.1:8080/v1/segment

``--model`` takes whatever ``deeplab.load`` takes: a training run, an export (SavedModel
folder), a ``.tflite`` file or an import of ``deeplab.import_official``. The page shows the
photo, the colour map and the overlay with a legend of the classes found, their shares of the
pixels and the model's time, and the model card's summary. Endpoints and limits:
:mod:`deeplab.export.demo_server` and the README ("A demo page").

It listens on 127.0.0.1 unless ``--host`` says otherwise (another address gets one warning line:
there is no authentication). It prints ``serving http://HOST:PORT/`` once the model has
answered a first image (``--port=0`` takes a free port), a line per request with
``--access_log``, and stops cleanly on SIGINT / SIGTERM (requests in flight finish first).
Exit status: 0 after a clean stop, 2 when the model cannot be loaded or the port is taken.
"""

import signal
import sys
import threading

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.data import images as image_io
from deeplab.export import demo_server

flags.DEFINE_string(
    "model",
    None,
    "What to serve: a training run, a SavedModel folder, a .tflite file or an imported "
    "model (anything deeplab.load takes).",
)
flags.DEFINE_string(
    "host",
    "127.0.0.1",
    "Address to listen on. The default answers this machine only; another address lets others "
    "in (the server has no authentication).",
)
flags.DEFINE_integer("port", 8080, "Port to listen on (0: any free port, printed at start).")
flags.DEFINE_float(
    "max_request_mb",
    demo_server.DEFAULT_MAX_REQUEST_BYTES / 2**20,
    "Largest request body in MiB; a larger one is refused with 413 before it is read.",
)
flags.DEFINE_integer(
    "max_pixels",
    0,
    "Most pixels (H x W) of one image, checked from its header before decoding (413 beyond); "
    "0: the model's cap (an export's --serving_max_pixels, else 4096 x 4096).",
)
flags.DEFINE_integer(
    "queue_size",
    demo_server.DEFAULT_QUEUE_SIZE,
    "Segment requests held at once (one on the model, the rest waiting); one more gets 503 "
    "with Retry-After.",
)
flags.DEFINE_float(
    "request_timeout",
    demo_server.DEFAULT_REQUEST_TIMEOUT,
    "Seconds to read a request and to wait for the model before giving up (408 / 503).",
)
flags.DEFINE_boolean("access_log", False, "Print a line per request.")

FLAGS = flags.FLAGS


def warm_up(segmenter, page_files):
    """Runs the model once on a bundled sample (graph tracing happens before the first user
    request, and a model that cannot run fails here, before the port opens)."""
    names = demo_server.sample_names(page_files)
    if names:
        pixels, _ = image_io.read_rgb(page_files[names[0]][0], path=names[0])
        segmenter.predict(pixels)


def main(args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.export import loading  # after the flags: fast --help

    if not FLAGS.model:
        raise ConfigError("pass --model=PATH (a run, an export, a .tflite file or an import)")
    segmenter = loading.load(FLAGS.model)
    print(f"model: {segmenter.summary()}", flush=True)
    warm_up(segmenter, demo_server.read_page_files())
    try:
        server = demo_server.DemoServer(
            (FLAGS.host, FLAGS.port),
            segmenter,
            max_request_bytes=int(FLAGS.max_request_mb * 2**20),
            max_pixels=FLAGS.max_pixels,
            queue_size=FLAGS.queue_size,
            request_timeout=FLAGS.request_timeout,
            access_log=sys.stderr if FLAGS.access_log else None,
        )
    except (OSError, ValueError) as error:
        raise UserError(f"cannot listen on {FLAGS.host}:{FLAGS.port}: {error}") from None
    host, port = server.server_address[:2]
    if not demo_server.is_loopback(FLAGS.host):
        print(
            f"WARNING: listening on {FLAGS.host}:{port}, reachable from other machines: this "
            "server has no authentication, anyone who can reach it can use the model",
            flush=True,
        )
    stop_requested = threading.Event()
    received = []

    def on_signal(number, frame):
        del frame
        received.append(signal.Signals(number).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    thread = demo_server.serve_forever_in_thread(server)
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"serving http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    while not stop_requested.wait(timeout=1.0):
        pass
    clean = demo_server.stop(server, thread)
    print(
        f"stopped ({received[0] if received else 'signal'}): "
        f"{server.counters['segmented']} images segmented"
        + ("" if clean else "; requests still running were cut off"),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    _console.run(main)
