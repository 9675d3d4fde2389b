"""jointtask: when does joint task training lower the size at which a hard task becomes learnable?

Pipeline (each layer imports only from the ones before it):
tasks -> model -> train -> sweep -> analysis -> report; the Python API (api.py) and the command
line (cli.py) on top.
"""

__version__ = "0.1.0"

# The subpackage `train` is imported (it imports nothing) before the API's `train` function is
# bound: a subpackage imported later would replace the function in this namespace.
from . import train as _train_package  # noqa: E402, F401
from .api import Model, UserError, claims, load_model, ratios, results, train, transition  # noqa: E402

__all__ = ["Model", "UserError", "claims", "load_model", "ratios", "results", "train", "transition", "__version__"]
