"""facewatch: realtime face recognition on many video streams."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facewatch")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
