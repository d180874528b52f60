#!/usr/bin/env bash
# The dependency rule, checked on the sources: core includes nothing of ours outside core, and
# no I/O, threads, clocks or environment. Exit 1 with the offending lines.
set -u
cd "$(dirname "$0")/.."
bad=$(grep -nE '#include "(grid|net|engine|fleet|gateway|runtime|sim|store|plan|testing)/|#include <(boost|asio|sys/|netinet|arpa/|thread>|fstream>|iostream>|filesystem>|sqlite3|pqxx|curl)|std::chrono::(system|steady)_clock::now|std::thread|getenv\(' \
  $(ls src/core/*.h src/core/*.cc | grep -v '_test\.cc$'))
if [ -n "$bad" ]; then
  echo "src/core reaches outside itself:"
  echo "$bad"
  exit 1
fi
echo "core is pure"
