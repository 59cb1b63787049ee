"""distilld: continuous distillation daemon.

The code lives in the repository's top-level folders ``daemon/``,
``detectors/``, ``trainers/`` and ``registry/``, installed as subpackages of
this one so that no top-level ``daemon`` or ``registry`` module is claimed.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("distilld")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
