"""jointtask: when does joint task training lower the size at which a hard task becomes learnable?

Pipeline (each layer imports only from the ones before it):
tasks -> model -> train -> sweep -> analysis -> report; the Python API (api.py) and the command
line (cli.py) on top. `jointtask.train(config, out, overrides)` trains one run (the train package
is callable).
"""

__version__ = "0.1.0"

from . import train  # noqa: E402  (callable: trains one run)
from .api import Model, UserError, claims, load_model, ratios, results, transition  # noqa: E402

__all__ = ["Model", "UserError", "claims", "load_model", "ratios", "results", "train", "transition", "__version__"]
