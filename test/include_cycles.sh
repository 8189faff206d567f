#!/usr/bin/env bash
# Lists the include circles between the modules of src/: a module is a
# file pair X.c + X.h, and module X uses module Y when X.c or X.h includes
# "Y.h".  A circle (api_test -> connect -> ... -> api_test) means neither
# module can be read, built or replaced without the other.  Prints one
# circle a line, then "# N circles"; with a module name, lists only the
# circles through that module (and counts those).  Exits 1 when it found a
# circle.  Bash and awk only, so that it runs wherever the suites run.
#   bash test/include_cycles.sh [module]
set -euo pipefail
cd "$(dirname "$0")/../src"
circles=$(mktemp)
trap 'rm -f "$circles"' EXIT
for f in *.c *.h; do
  sed -n "s/^#include \"\([^\"]*\)\.h\".*/${f%.*} \1/p" "$f"
done | sort -u | awk -v only="${1:-}" '
  $1 != $2 && !(($1, $2) in edge) {
    edge[$1, $2] = 1; out[$1] = out[$1] " " $2; node[$1] = 1; node[$2] = 1
  }
  # Every elementary circle once: from its smallest module, through
  # larger ones only.
  function walk(start, at, path,    n, next_, i, nexts) {
    n = split(out[at], nexts, " ")
    for (i = 1; i <= n; i++) {
      next_ = nexts[i]
      if (next_ == start) {
        if (only == "" || index(" " path " ", " " only " "))
          print path " -> " start
      } else if (next_ > start && !(next_ in onpath)) {
        onpath[next_] = 1
        walk(start, next_, path " -> " next_)
        delete onpath[next_]
      }
    }
  }
  END {
    for (s in node) { onpath[s] = 1; walk(s, s, s); delete onpath[s] }
  }' | sort > "$circles"
cat "$circles"
n=$(wc -l < "$circles")
echo "# $n circles${1:+ through $1}"
[ "$n" -eq 0 ]
