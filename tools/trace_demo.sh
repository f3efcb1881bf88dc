#!/usr/bin/env bash
# One photo through the three services with OpenTelemetry's console exporter, then the trace as a tree
# (docs/operations.md, "Traces"). Usage: tools/trace_demo.sh [PHOTO] [OUT_DIR]   (after ./dev setup)
# Starts the detector, masker and evaluator on ports 56051-56053, protects PHOTO with --check sface
# through them, stops them; each process's spans are in OUT_DIR/*.out (default out/trace).
set -u
cd "$(dirname "$0")/.."
d="${2:-out/trace}"; rm -rf "$d"; mkdir -p "$d"
export OTEL_TRACES_EXPORTER=console TF_CPP_MIN_LOG_LEVEL=2 FACEOFF_GRACE_SECONDS=2
F=".venv/bin/faceoff"
$F serve detector --host 127.0.0.1 --port 56051 --metrics-port -1 > "$d/detector.out" 2> "$d/detector.err" &
P1=$!
$F serve masker --host 127.0.0.1 --port 56052 --metrics-port -1 --detector 127.0.0.1:56051 > "$d/masker.out" 2> "$d/masker.err" &
P2=$!
$F serve evaluator --host 127.0.0.1 --port 56053 --metrics-port -1 --local-recognizers sface > "$d/evaluator.out" 2> "$d/evaluator.err" &
P3=$!
.venv/bin/python - <<'PY'
import time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
for port, svc in ((56051,"faceoff.v1.Detector"),(56052,"faceoff.v1.Masker"),(56053,"faceoff.v1.Evaluator")):
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(ch)
    end = time.time() + 600
    while time.time() < end:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=2).status == 1: break
        except grpc.RpcError: pass
        time.sleep(1)
    print(svc, "SERVING")
PY
photo="${1:-../shared/data/faceoff-celebs/photos/barack/barack_01.jpg}"
$F protect "$photo" -o "$d/protected.${photo##*.}" --server 127.0.0.1:56052 --evaluator 127.0.0.1:56053 --check sface > "$d/cli.out" 2> "$d/cli.err"
echo "protect exit $?"
kill -TERM $P1 $P2 $P3; wait
.venv/bin/python tools/trace_tree.py "$d"/cli.out "$d"/masker.out "$d"/detector.out "$d"/evaluator.out
