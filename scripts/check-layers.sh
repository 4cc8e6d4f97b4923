#!/usr/bin/env bash
# Imports in cached-runtime go downward only (docs/ARCHITECTURE.md draws the layers; LAYERS
# below lists them):
#
#   leaves (error, spawn, telemetry, warn) < connection < cache, ratelimit, counter, queue, session
#   < web < __private < lib.rs
#
# A file may name its own layer and the ones below it, never one above: every `crate::x`,
# `$crate::x` (macros), `crate::{x, ..}` group and `super::` path that climbs to the crate
# root is checked, in code only (comments and strings are skipped). A re-export at the crate
# root counts as the layer it comes from (`crate::Cache` is cache's); an item defined in lib.rs
# itself belongs to the top. A file outside every layer is an error too: a new module must be
# given a layer.
#
# Usage: scripts/check-layers.sh [SRC]     (SRC defaults to cached-runtime/src)
#        scripts/check-layers.sh --self-test  (proves the check fails on planted violations)
set -euo pipefail
cd "$(dirname "$0")/.."

# Every module at the crate root, with its layer (lib.rs is above them all, at 5). A new
# module gets a line here and in docs/ARCHITECTURE.md: a primitive beside the cache (a rate
# limiter, a queue) sits in layer 2 with it.
LAYERS=(
  error:0 spawn:0 telemetry:0 warn:0
  connection:1
  cache:2 ratelimit:2 counter:2 queue:2 session:2
  web:3
  __private:4
)

# Known violations, each to be removed by the change named beside it; an entry that no longer
# matches fails the check, so none outlives its reason. Format: `file top-module`. None today.
ALLOWED=()

check() {
  local src=$1
  [ -d "$src" ] || { echo "check-layers: no directory $src" >&2; return 2; }
  local allowed exports
  allowed=$(printf '%s\n' "${ALLOWED[@]}")
  exports=$(root_exports "$src/lib.rs")
  (cd "$src" && find . -name '*.rs' | sed 's|^\./||' | LC_ALL=C sort) |
    while IFS= read -r file; do
      awk -v file="$file" -v srcdir="$src" -v exports="$exports" -v layers="${LAYERS[*]}" \
        -f <(lexer) "$src/$file"
    done |
    ALLOWED_LIST="$allowed" awk -v src="$src" '
      BEGIN {
        n = split(ENVIRON["ALLOWED_LIST"], lines, "\n")
        for (i = 1; i <= n; i++) if (lines[i] != "") { allowed[lines[i]] = 1; used[lines[i]] = 0 }
      }
      /^VIOLATION / {
        # VIOLATION file line top message
        entry = $2 " " $4
        if (entry in allowed) { used[entry] = 1; next }
        sub(/^VIOLATION [^ ]+ [^ ]+ [^ ]+ /, "")
        print; bad = 1; next
      }
      /^UNLAYERED / { print src "/" $2 ": not in any layer: add it to scripts/check-layers.sh and docs/ARCHITECTURE.md"; bad = 1; next }
      END {
        for (e in used) if (!used[e]) { print "scripts/check-layers.sh: allowed violation \"" e "\" no longer occurs: remove it from ALLOWED"; bad = 1 }
        exit bad
      }'
}

# `name=module` for every name lib.rs re-exports (`pub use cache::{key, shape};` gives
# `key=cache shape=cache`), so `crate::Cache` counts as the layer it comes from.
root_exports() {
  [ -f "$1" ] || return 0
  sed 's|//.*||' "$1" | tr '\n' ' ' | { grep -o 'pub use [^;]*;' || true; } | awk '{
    s = $0; sub(/^pub use[ ]+/, "", s); sub(/;$/, "", s)
    top = s; sub(/[^A-Za-z0-9_].*/, "", top)
    # every identifier not followed by `::`, with `x as y` giving y
    gsub(/[ ]+as[ ]+/, "@", s)
    n = split(s, w, /[^A-Za-z0-9_@:]+/)
    for (i = 1; i <= n; i++) {
      if (w[i] == "" || w[i] ~ /::$/) continue
      k = split(w[i], seg, "::"); name = seg[k]; sub(/.*@/, "", name)
      if (name != "" && name != top) printf "%s=%s ", name, top
    }
  }'
}

# Prints the awk program that reads one file and reports `VIOLATION file line top message`
# for every upward name, or `UNLAYERED file`.
lexer() {
  cat <<'AWK'
function layer_of_top(t) { return (t in layer) ? layer[t] : 5 }
function layer_name(l) {
  return l " (" (l == 0 ? "leaves" : l == 1 ? "connection" : l == 2 ? "cache and primitives" : l == 3 ? "web" : l == 4 ? "__private" : "lib.rs") ")"
}
function is_module(t) { return t in layer }
function named(top, line) {
  if (top == "self" || top == "*" || top == "") return
  how = ""
  if (is_module(top)) l = layer_of_top(top)
  else if (top in export) {
    # a re-export: the layer it comes from (another crate's item: any layer may name it)
    l = is_module(export[top]) ? layer_of_top(export[top]) : 0
    how = ", through the crate root"
  } else l = 5
  if (l > own) {
    printf "VIOLATION %s %d %s %s/%s:%d: names %s%s, of layer %s, from layer %s\n", file, line, top, srcdir, file, line, top, how, layer_name(l), layer_name(own)
  }
}
# One token of code at a time: identifiers, `::`, `{`, `}`, `,`, `;`, or `#` for anything else.
function tok(t, line) {
  if (t == "{") depth++
  if (t == "}") {
    depth--
    while (inl > 0 && inline_at[inl] == depth) inl--
  }
  # inline modules: `mod name {`
  if (p2 == "mod" && t == "{") { inl++; inline_at[inl] = depth - 1 }

  if (state == "list") {
    if (t == "{") ldepth++
    else if (t == "}") { ldepth--; if (ldepth == 0) state = "" }
    else if (t == ",") { if (ldepth == 1) lstart = 1 }
    else if (lstart && ldepth == 1 && t != "::") { named(t, line); lstart = 0 }
    else lstart = 0
  } else if (state == "after_root") {
    # `crate` / `$crate` / enough `super`s were followed by `::`
    if (t == "{") { state = "list"; ldepth = 1; lstart = 1 }
    else if (t == "super") { state = "supers"; supers++ }
    else { named(t, line); state = "" }
  } else if (state == "root") {
    state = (t == "::") ? "after_root" : ""
  } else if (state == "supers") {
    if (t == "::") {
      # the module `super` x n reaches: within this file, its folder, or the crate root
      if (supers > inl && supers - inl >= nmod) state = "after_root"
      else state = "supers_colons"
    } else state = ""
  } else if (state == "supers_colons") {
    if (t == "super") { supers++; state = "supers" } else state = ""
  }
  if (state == "" && p1 != "::") {
    if (t == "crate" || t == "$crate") state = "root"
    else if (t == "super") { state = "supers"; supers = 1 }
  }
  p2 = p1; p1 = t
}
function flush(line) { if (word != "") { tok(word, line); word = "" } }
BEGIN {
  nl = split(layers, lw, " ")
  for (k = 1; k <= nl; k++) if (split(lw[k], kv, ":") == 2) layer[kv[1]] = kv[2] + 0
  # The layer of this file, and how deep its module sits below the crate root.
  top = file; sub(/\/.*/, "", top); sub(/\.rs$/, "", top)
  if (file == "lib.rs") own = 5
  else if (top in layer) own = layer[top]
  else { print "UNLAYERED " file; own = -1 }
  path = file; sub(/\.rs$/, "", path); sub(/\/mod$/, "", path)
  nmod = (file == "lib.rs") ? 0 : split(path, parts, "/")
  mode = ""; depth = 0; inl = 0
  ne = split(exports, ex, " ")
  for (k = 1; k <= ne; k++) if (split(ex[k], kv, "=") == 2) export[kv[1]] = kv[2]
}
own < 0 { exit }
{
  s = $0; n = length(s); i = 1
  while (i <= n) {
    c = substr(s, i, 1)
    if (mode == "block") {
      if (substr(s, i, 2) == "*/") { bdepth--; if (bdepth == 0) mode = ""; i += 2; continue }
      if (substr(s, i, 2) == "/*") { bdepth++; i += 2; continue }
      i++; continue
    }
    if (mode == "str") {
      if (c == "\\") { i += 2; continue }
      if (c == "\"") mode = ""
      i++; continue
    }
    if (mode == "raw") {
      if (substr(s, i, length(rawend)) == rawend) { mode = ""; i += length(rawend); continue }
      i++; continue
    }
    if (c ~ /[A-Za-z0-9_$]/) { word = word c; i++; continue }
    # r"…" and r#"…"# raw strings
    if (c == "#" && (word == "r" || word == "br")) {
      j = i; h = ""
      while (substr(s, j, 1) == "#") { h = h "#"; j++ }
      if (substr(s, j, 1) == "\"") { word = ""; mode = "raw"; rawend = "\"" h; i = j + 1; continue }
    }
    if (c == "\"" && (word == "r" || word == "br")) { word = ""; mode = "raw"; rawend = "\""; i++; continue }
    flush(NR)
    if (substr(s, i, 2) == "//") break
    if (substr(s, i, 2) == "/*") { mode = "block"; bdepth = 1; i += 2; continue }
    if (c == "\"") { mode = "str"; i++; continue }
    if (c == "'") {
      # a char literal ('x', '\n', '\u{..}'), else a lifetime
      if (substr(s, i + 1, 1) == "\\") { j = index(substr(s, i + 3), "'"); i = (j > 0) ? i + 3 + j : n + 1; continue }
      if (substr(s, i + 2, 1) == "'") { i += 3; continue }
      i++; continue
    }
    if (substr(s, i, 2) == "::") { tok("::", NR); i += 2; continue }
    if (c == "{" || c == "}" || c == "," || c == ";") { tok(c, NR); i++; continue }
    if (c == " " || c == "\t") { i++; continue }
    tok("#", NR); i++
  }
  flush(NR)
}
AWK
}

self_test() {
  local tmp status=0
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local base=cached-runtime/src
  plant() { # name file text expected-message
    rm -rf "$tmp/src" && cp -r "$base" "$tmp/src"
    printf '%s\n' "$3" >>"$tmp/src/$2"
    local out
    if out=$(check "$tmp/src" 2>&1); then
      echo "self-test: $1 was not caught" >&2; status=1
    elif ! grep -qF "$4" <<<"$out"; then
      echo "self-test: $1 failed without naming it: $out" >&2; status=1
    fi
  }
  check "$base" >/dev/null || { echo "self-test: the tree itself does not pass" >&2; return 1; }
  plant "use crate::cache in a connection file" connection/link.rs \
    'use crate::cache;' 'names cache, of layer 2 (cache and primitives), from layer 1 (connection)'
  plant "a group naming a higher layer" connection/pool.rs \
    $'use crate::{\n    error::CacheError,\n    web::http,\n};' 'names web, of layer 3 (web), from layer 1 (connection)'
  plant '$crate naming a higher layer in a macro' cache/codec.rs \
    'macro_rules! m { () => { $crate::__private::X }; }' 'names __private, of layer 4 (__private), from layer 2'
  plant "super:: climbing to the root" connection/tracking.rs \
    'fn f() { let _ = super::super::cache::Cache::in_memory(); }' 'names cache, of layer 2 (cache and primitives), from layer 1 (connection)'
  plant "a crate-root re-export from a leaf" telemetry.rs \
    'fn f(_: &crate::Cache) {}' 'names Cache, through the crate root, of layer 2 (cache and primitives), from layer 0 (leaves)'
  plant "an item of lib.rs itself from __private" __private.rs \
    'fn f() { crate::not_reexported(); }' 'names not_reexported, of layer 5 (lib.rs), from layer 4'
  plant "a file outside every layer" stray.rs '' 'not in any layer'
  # An allowed violation that no longer occurs.
  rm -rf "$tmp/src" && cp -r "$base" "$tmp/src"
  local saved=("${ALLOWED[@]}")
  ALLOWED+=("connection/link.rs web")
  local out
  if out=$(check "$tmp/src" 2>&1) || ! grep -qF '"connection/link.rs web" no longer occurs' <<<"$out"; then
    echo "self-test: a stale allowed violation was not reported" >&2; status=1
  fi
  ALLOWED=("${saved[@]}")
  # What must not be caught: comments, strings, inline test modules, `pub(crate)`.
  rm -rf "$tmp/src" && cp -r "$base" "$tmp/src"
  printf '%s\n' '// use crate::cache;' '/* crate::web */' 'const S: &str = "crate::web";' \
    "const C: char = '\"'; const D: &str = \"crate::cache\";" 'pub(crate) fn g() {}' \
    'mod t { mod u { use super::super::g; } }' >>"$tmp/src/connection/link.rs"
  check "$tmp/src" >/dev/null || { echo "self-test: comments, strings or inline modules were flagged" >&2; status=1; }
  [ "$status" = 0 ] && echo "check-layers self-test: ok"
  return "$status"
}

if [ "${1:-}" = "--self-test" ]; then
  self_test
else
  check "${1:-cached-runtime/src}"
fi
