"""Sweeps: mixtures x widths x seeds (experiment), planned on disk (plan_io), run resumably
(runner) by workers (worker) placed on local processes or a Ray cluster (placement, executors),
collected into a results table (results), and kept as run records (records). Submodules are
imported where used, so that checking an experiment never imports torch."""
