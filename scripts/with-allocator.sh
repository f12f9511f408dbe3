#!/usr/bin/env bash
# with-allocator.sh COMMAND...: runs COMMAND on the allocator MEMORY_ALLOCATOR names, preloaded
# (an allocator cannot be changed once a process runs; its children inherit it). auto (the
# default) and mimalloc use mimalloc where it is installed (Debian/Ubuntu: apt-get install
# libmimalloc2.0), much faster than glibc's malloc for the model's short-lived buffers (README
# "Memory allocator"); system keeps glibc's. npm start (scripts/start.sh) and the benchmarks
# run through it.
set -euo pipefail

# The first library of that name the dynamic loader's usual directories hold, or nothing.
find_library() {
  local dir
  for dir in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
    if [ -e "$dir/$1" ]; then
      echo "$dir/$1"
      return 0
    fi
  done
  return 1
}

choice="${MEMORY_ALLOCATOR:-auto}"
library=""
case "${choice,,}" in
  auto) library="$(find_library libmimalloc.so.2 || true)" ;;
  mimalloc | jemalloc)
    library="$(find_library "lib${choice,,}.so.2")" || {
      echo "MEMORY_ALLOCATOR=$choice: lib${choice,,}.so.2 is not installed" \
        "(Debian/Ubuntu: apt-get install $([ "${choice,,}" = mimalloc ] && echo libmimalloc2.0 || echo libjemalloc2))" >&2
      exit 1
    }
    ;;
  system) ;;
  # Anything else: the server refuses it, naming the variable and the values it takes.
  *) ;;
esac
if [ -n "$library" ]; then
  export LD_PRELOAD="$library${LD_PRELOAD:+:$LD_PRELOAD}"
fi
exec "$@"
