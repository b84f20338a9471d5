"""The declarative preprocessing steps of a manifest's image inputs (applied by ``data.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from pytest_mlscope.manifest.base import PositiveInt, _Strict


class Normalize(_Strict):
    mean: Annotated[list[float], Field(min_length=1)]
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _same_length(self) -> Normalize:
        if len(self.mean) != len(self.std):
            raise ValueError("expected mean and std of the same length")
        return self


Size = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]  # noqa: UP007


class DecodeStep(_Strict):
    decode: Literal["rgb", "bgr", "gray"]


class ResizeStep(_Strict):
    resize: Size


class CenterCropStep(_Strict):
    center_crop: Size


class ScaleStep(_Strict):
    scale: Annotated[float, Field(gt=0)]


class NormalizeStep(_Strict):
    normalize: Normalize


class LayoutStep(_Strict):
    layout: Literal["chw", "hwc"]


PREPROCESS_STEPS = ("decode", "resize", "center_crop", "scale", "normalize", "layout")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in PREPROCESS_STEPS else None
    return None


PreprocessStep = Annotated[
    Union[  # noqa: UP007
        Annotated[DecodeStep, Tag("decode")],
        Annotated[ResizeStep, Tag("resize")],
        Annotated[CenterCropStep, Tag("center_crop")],
        Annotated[ScaleStep, Tag("scale")],
        Annotated[NormalizeStep, Tag("normalize")],
        Annotated[LayoutStep, Tag("layout")],
    ],
    Discriminator(
        _step_kind,
        custom_error_type="preprocess_step",
        custom_error_message="expected a mapping with exactly one key, one of "
        + ", ".join(PREPROCESS_STEPS),
    ),
]
