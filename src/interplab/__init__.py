"""interplab: a workbench for the empirical science of language-model internals."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("interplab")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from interplab.errors import InterplabError

__all__ = ["InterplabError", "__version__"]
