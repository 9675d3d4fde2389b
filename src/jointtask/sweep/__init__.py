"""Sweeps: mixtures x widths x seeds (experiment), run resumably (runner) on local processes or a
Ray cluster (executors), collected into a results table (results). Submodules are imported where
used, so that checking an experiment never imports torch."""
