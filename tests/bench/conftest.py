# Benchmarks are plain scripts, not tests: keep pytest from collecting them.
collect_ignore_glob = ["*.py"]
