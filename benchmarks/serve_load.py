"""A bounded load test of the demo server (python -m deeplab.serve) on the loopback.

    nice -n 10 python benchmarks/serve_load.py --model=exports/quickstart
    nice -n 10 python benchmarks/serve_load.py --model=exports/quickstart --queue_size=8

Starts the server as its own process (``--port=0``), sends a few warm-up requests one at a
time, reads the server's RSS, then sends ``--requests`` POST /v1/segment requests (default 200)
from ``--clients`` concurrent clients (default 8; each sends its next request as soon as it has
an answer, or after the Retry-After seconds of a 503 "busy", which counts as one of the
requests and is not sent again; ``--no_wait``: at once), reads the RSS again, and
stops the server with SIGTERM. Prints one markdown table row: latency percentiles of the
answered requests, the share refused as busy, throughput, the server's RSS before and after
and its peak (VmHWM), and writes everything to benchmarks/out/serve_load-<time>.json.

Standard library only (the server process has the project's dependencies).
"""

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID_VAL = os.path.join(REPO, "..", "shared", "data", "camvid", "val")
SAMPLE = os.path.join(REPO, "deeplab", "export", "demo_page", "samples", "street.png")


def default_image():
    """A CamVid frame (480x360) when ../shared has them, else the drawn street sample."""
    if os.path.isdir(CAMVID_VAL):
        names = sorted(n for n in os.listdir(CAMVID_VAL) if n.endswith(".png"))
        if names:
            return os.path.join(CAMVID_VAL, names[0])
    return SAMPLE


def memory_kib(pid):
    """{"VmRSS": KiB, "VmHWM": KiB} of a process (Linux /proc)."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def cpu_name():
    flags, name = set(), platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name") and name in ("unknown", ""):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extras = [
        f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags
    ]
    return f"{name} ({os.cpu_count()} CPUs; {', '.join(extras) or 'no AVX2'})"


def post(port, body, timeout):
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/segment", body=body)
        response = connection.getresponse()
        payload = response.read()
        status = response.status
        retry_after = response.getheader("Retry-After")
    finally:
        connection.close()
    elapsed = time.perf_counter() - start
    model_ms = json.loads(payload)["timings_ms"]["model"] if status == 200 else None
    return status, elapsed, model_ms, float(retry_after) if retry_after else 0.0


def percentile(values, q):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[rank - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(REPO, "exports", "quickstart"))
    parser.add_argument("--image", default=None, help="default: a CamVid frame or the sample")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--queue_size", type=int, default=None, help="the server's --queue_size")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--no_wait", action="store_true", help="after a 503, send the next request at once"
    )
    args = parser.parse_args()
    image = args.image or default_image()
    with open(image, "rb") as handle:
        body = handle.read()

    command = [sys.executable, "-m", "deeplab.serve", f"--model={args.model}", "--port=0"]
    if args.queue_size:
        command.append(f"--queue_size={args.queue_size}")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = None
        for line in server.stdout:
            if line.startswith("serving http://"):
                port = int(line.split(":")[2].split("/")[0])
                break
        if port is None:
            raise SystemExit("the server did not start:\n" + server.stderr.read()[-3000:])
        for _ in range(args.warmup):
            status = post(port, body, args.timeout)[0]
            assert status == 200, status
        before = memory_kib(server.pid)

        results, lock = [], threading.Lock()
        remaining = [args.requests]

        def client():
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                try:
                    outcome = post(port, body, args.timeout)
                except OSError as error:
                    outcome = (f"error {type(error).__name__}", 0.0, None, 0.0)
                with lock:
                    results.append(outcome)
                if outcome[0] == 503 and not args.no_wait:
                    time.sleep(outcome[3])  # as Retry-After asks, before its next request

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        after = memory_kib(server.pid)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()

    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    other = [r[0] for r in results if r[0] not in (200, 503)]
    latencies = [1000 * r[1] for r in ok]
    model_ms = [r[2] for r in ok]
    busy_ms = [1000 * r[1] for r in busy]
    summary = {
        "cpu": cpu_name(),
        "model": args.model,
        "image": os.path.basename(image),
        "image_bytes": len(body),
        "requests": len(results),
        "clients": args.clients,
        "queue_size": args.queue_size or "default",
        "waits_after_503": not args.no_wait,
        "answered": len(ok),
        "busy": len(busy),
        "other": other,
        "busy_share": len(busy) / max(1, len(results)),
        "wall_s": wall,
        "images_per_s": len(ok) / wall,
        "latency_ms": {q: percentile(latencies, q) for q in (50, 90, 99, 100)} if ok else None,
        "model_ms_median": percentile(model_ms, 50) if ok else None,
        "busy_latency_ms_median": percentile(busy_ms, 50) if busy else None,
        "rss_mib_before": before["VmRSS"] / 1024,
        "rss_mib_after": after["VmRSS"] / 1024,
        "peak_rss_mib": after["VmHWM"] / 1024,
        "server_exit": server.returncode,
        "server_last_line": out.strip().splitlines()[-1] if out.strip() else "",
        "server_stderr_tail": err[-500:],
        "command": " ".join(sys.argv),
    }
    os.makedirs(os.path.join(REPO, "benchmarks", "out"), exist_ok=True)
    path = os.path.join(
        REPO, "benchmarks", "out", time.strftime("serve_load-%Y%m%d-%H%M%S.json", time.gmtime())
    )
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps(summary, indent=2))
    lat = summary["latency_ms"] or {}
    print(
        "| queue | answered | refused busy | p50 / p90 / p99 / max ms | model ms (median) | "
        "images/s | RSS before -> after (peak) MiB |\n|---|---|---|---|---|---|---|"
    )
    print(
        f"| {summary['queue_size']} | {len(ok)} | {len(busy)} ({100 * summary['busy_share']:.1f}%) "
        f"| {lat.get(50, 0):.0f} / {lat.get(90, 0):.0f} / {lat.get(99, 0):.0f} / "
        f"{lat.get(100, 0):.0f} | {summary['model_ms_median'] or 0:.0f} | "
        f"{summary['images_per_s']:.1f} | {summary['rss_mib_before']:.0f} -> "
        f"{summary['rss_mib_after']:.0f} ({summary['peak_rss_mib']:.0f}) |"
    )
    print(f"written: {path}")
    return 0 if not other and server.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
