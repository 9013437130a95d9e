"""The suite's version, read from the installed package so one number is reported everywhere."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("insight-mcp")
except PackageNotFoundError:  # running from a bare checkout
    VERSION = "0.0.0"
