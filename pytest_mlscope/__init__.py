"""pytest-mlscope: accuracy and performance regression tests for ML models, as a pytest plugin.

Importing the package imports nothing heavy; the plugin module (loaded by every pytest run in an
environment where this is installed) stays as light.
"""

__version__ = "0.1.0"
