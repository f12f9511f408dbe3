#!/usr/bin/env bash
# Checks (--check) or rewrites (--fix) the C++ sources with the project's .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:---check}"
mapfile -t files < <(find native bench -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) 2>/dev/null | sort)
[ ${#files[@]} -eq 0 ] && exit 0
bin=node_modules/.bin/clang-format
if [ "$mode" = "--fix" ]; then
  "$bin" -i "${files[@]}"
else
  "$bin" --dry-run --Werror "${files[@]}"
fi
