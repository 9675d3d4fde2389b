"""Training: one run from a config (loop.train_run), or a cohort of runs of one shape
(cohort.train_cohort); run_dir owns a run directory. Submodules are imported where used, so that
validating a config never imports torch."""
