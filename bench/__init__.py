"""
A rerunnable benchmark of uploadsvc against the servers a user would pick
instead (issue 5).

  - L{bench.run}: the command line; starts each server, runs the scenarios,
    writes C{bench/RESULTS.md}.
  - L{bench.loadgen}: the load generator (non-blocking raw sockets, bodies
    sent with C{os.sendfile}).
  - L{bench.scenarios}: S1..S6, full and quick sizes.
  - L{bench.measure}: one run: fresh server, warm-up, load, sync, verify.
  - L{bench.servers}: launchers for uploadsvc, the aiohttp baseline and nginx.
  - L{bench.procfs}: CPU and RSS of a process tree, from C{/proc}.
  - L{bench.source}: the random source file and byte-for-byte verification.
  - L{bench.report}: medians, ranges and ratios, as Markdown.
  - L{bench.baseline_aiohttp}: the origin question's server.
  - L{bench.fsyncrate}: how many durable small-file completions the disk
    allows.
"""
