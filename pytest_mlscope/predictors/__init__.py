"""One interface over many frameworks; see :mod:`pytest_mlscope.predictors.base`."""

from pytest_mlscope.predictors.base import (
    Predictor,
    framework_unavailable,
    predictor_class,
    registered_predictors,
)

__all__ = ["Predictor", "framework_unavailable", "predictor_class", "registered_predictors"]
