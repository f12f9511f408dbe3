#!/usr/bin/env bash
# npm start: the server, on the allocator MEMORY_ALLOCATOR names (scripts/with-allocator.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/with-allocator.sh node dist/src/main.js "$@"
