#!/usr/bin/env bash
# Instructions per call of one variant, by callgrind: runs `perf-instr run` twice under
# `valgrind --tool=callgrind` (SMALL and LARGE measured calls after the same warm-up) and divides
# the difference in instructions by the difference in calls, so start-up, connecting and the
# warm-up cancel out. With TOP=n also prints the n functions whose inclusive count per call
# grew most, self and inclusive (callgrind_annotate of both runs, subtracted).
#
#   benches/instr/instr.sh <perf-instr binary> <variant> [callers]
#
# Env: SMALL (2000), LARGE (12000), OUT (directory for the callgrind files, default a temp dir),
# TOP (0). Threads are counted together (client workers and redis-rs' connection tasks); the
# redis-server child is not traced.
set -euo pipefail
bin="$1" variant="$2" callers="${3:-1}"
small="${SMALL:-2000}" large="${LARGE:-12000}" top="${TOP:-0}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
ir() { # total Ir of a callgrind file
  awk '/^summary:/ { print $2 }' "$1"
}
for n in "$small" "$large"; do
  valgrind --tool=callgrind --callgrind-out-file="$out/$variant-$callers-$n.out" \
    "$bin" run "$variant" "$callers" "$n" >/dev/null 2>&1
done
a="$out/$variant-$callers-$small.out" b="$out/$variant-$callers-$large.out"
python3 - "$a" "$b" "$small" "$large" "$variant" "$callers" "$top" <<'PY'
import re, subprocess, sys
a, b, small, large, variant, callers, top = sys.argv[1:]
calls = int(large) - int(small)
def summary(f):
    for line in open(f):
        if line.startswith("summary:"):
            return int(line.split()[1])
def counts(f, inclusive):
    text = subprocess.run(["callgrind_annotate", f"--inclusive={inclusive}", "--tree=none",
                           "--threshold=100", "--context=0", f],
                          capture_output=True, text=True, check=True).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if m and ":" in m.group(2) and not m.group(2).startswith("=>"):
            # file:function [object] -> function
            name = m.group(2).rsplit(" [", 1)[0].split(":", 1)[1]
            n = int(m.group(1).replace(",", ""))
            # the same function under several files: summed for self, the largest for inclusive
            found[name] = found.get(name, 0) + n if inclusive == "no" else max(found.get(name, 0), n)
    return found
per_call = (summary(b) - summary(a)) / calls
print(f"{variant}\tcallers={callers}\tinstructions_per_call={per_call:.0f}")
for kind in (["no", "yes"] if int(top) else []):
    print(f"per call, {'inclusive' if kind == 'yes' else 'self'}:")
    ca, cb = counts(a, kind), counts(b, kind)
    rows = sorted(((cb.get(k, 0) - ca.get(k, 0)) / calls, k) for k in cb)
    for d, k in reversed(rows[-int(top):]):
        print(f"  {d:10.0f}  {k[:160]}")
PY
