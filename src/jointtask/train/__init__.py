"""Training: one run from a config (loop.train_run), or a cohort of runs of one shape
(cohort.train_cohort); run_dir owns a run directory. Submodules are imported where used, so that
validating a config never imports torch.

The package itself is callable: `jointtask.train(config, out, overrides={...})` trains one run
and returns its record (loop.train), while `import jointtask.train.loop` still imports the module.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, config, out, overrides=None, resume=False):
        """Train one run into `out` and return its RunResult (see loop.train)."""
        from .loop import train

        return train(config, out, overrides, resume)


sys.modules[__name__].__class__ = _CallablePackage
