"""Measurement tools for pykernels: the memory profiler, micro-benchmarks and charts.

* ``python -m profiling.memory``: peak memory and time of attention against S
  (naive, SDPA, every pykernels backend), with the analytic model (issue 7);
* ``python -m profiling.bench``: the micro-benchmark sweep (issue 8);
* ``python -m profiling.charts TABLE --out DIR``: charts from any results table;
* ``python -m profiling.compare NEW OLD``: the regression check.

Every command writes one long table (JSON lines, plus a CSV copy) whose rows
carry the environment (GPU, versions, commit, date); charts, summaries and the
notebooks read those tables, never numbers typed in. See docs/profiling.md.
"""
