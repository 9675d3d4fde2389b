"""jointtask: when does joint task training lower the size at which a hard task becomes learnable?

Pipeline (each layer imports only from the ones before it):
tasks -> model -> train -> sweep -> analysis -> report.
"""

__version__ = "0.1.0"
