#!/usr/bin/env bash
# Instructions per request of an HTTP server's `GET /items/1` (the demo with its near cache
# on, or the constant handler), by callgrind: the server runs under
# `valgrind --tool=callgrind` twice, answering SMALL and LARGE requests on one keep-alive
# connection after it first answers `X-Cache: HIT` (the demo) or 200 (the constant), and the
# difference in instructions is divided by the difference in requests.
#
#   benches/instr/demo-instr.sh demo <demo-app binary>
#   benches/instr/demo-instr.sh constant <constant binary>
#
# Env: SMALL (1000), LARGE (6000), OUT (directory for the callgrind files), TOP (0: how many
# functions to list by their inclusive instructions per request).
set -euo pipefail
kind="$1" bin="$2"
small="${SMALL:-1000}" large="${LARGE:-6000}" out="${OUT:-$(mktemp -d)}" top="${TOP:-0}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=($!)
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
echo '{"id":1}' >"$work/body.json"
for n in "$small" "$large"; do
  port="$(free_port)"
  file="$out/$kind-$n.out"
  env BIND="127.0.0.1:$port" DATABASE_PATH="$work/catalog-$n.db" REDIS_URL="redis://127.0.0.1:$rport" \
    RUST_LOG=warn REDIS_CACHE_NEAR_ENTRIES=10000 BODY_FILE="$work/body.json" PATH_TO_SERVE=/items/1 \
    valgrind --tool=callgrind --callgrind-out-file="$file" "$bin" >/dev/null 2>&1 &
  server=$!
  python3 - "$port" "$n" "$kind" <<'PY'
import http.client, sys, time
port, n, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 300
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/items/1")
        r = c.getresponse(); r.read()
        if r.status == 200 and (kind != "demo" or r.getheader("x-cache") == "HIT"):
            break
        c.close()
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the server never answered from its cache")
    time.sleep(0.2)
for _ in range(n):
    c.request("GET", "/items/1")
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  kill -TERM "$server"
  wait "$server" || true
done
python3 - "$out/$kind-$small.out" "$out/$kind-$large.out" "$small" "$large" "$kind" "$top" <<'PY'
import re, subprocess, sys
a, b, small, large, kind, top = sys.argv[1:]
calls = int(large) - int(small)
def summary(f):
    for line in open(f):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
print(f"{kind}\tinstructions_per_request={(summary(b) - summary(a)) / calls:.0f}")
def counts(f):
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=none", "--threshold=100",
                           "--context=0", f], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if m and ":" in m.group(2):
            name = m.group(2).rsplit(" [", 1)[0].split(":", 1)[1]
            found[name] = max(found.get(name, 0), int(m.group(1).replace(",", "")))
    return found
if int(top):
    ca, cb = counts(a), counts(b)
    rows = sorted(((cb.get(k, 0) - ca.get(k, 0)) / calls, k) for k in cb)
    for d, k in reversed(rows[-int(top):]):
        print(f"  {d:10.0f}  {k[:160]}")
PY
