"""How a model is run on an image at inference: :class:`InferenceOptions`, one object.

The settings of Sec. 4.2 and the project's additions (sliding windows, the authors' padded
evaluation) travel together, whole, from the config (``EvalConfig.inference_options()``) or
the Python API (``deeplab.load``) through evaluation, visualization, prediction, the exports
and serving. The object checks itself when it is made, so no function downstream checks the
settings again.

Imports nothing but the standard library.
"""

import dataclasses

from deeplab.common.errors import ConfigError


def _size(value, name):
    """None / 0 / an empty sequence -> None; an int S -> (S, S); (h, w) -> (h, w), positive."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value:
            return None
        value = (value, value)
    value = tuple(value)
    if not value:
        return None
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or any(int(v) != v or int(v) < 1 for v in value):
        raise ConfigError(f"{name} takes a positive size S or (H, W), got {value}")
    return tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """How every image is segmented (Sec. 4.2): one immutable, checked record.

    Attributes:
      scales: input scales whose probabilities are averaged (distinct, positive), e.g.
        ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``; ``(1.0,)``: the image as it is.
      flip: also average the left-right flipped input of every scale.
      tile_size: None (whole images) or (h, w): a pass larger than it is segmented in
        overlapping windows (an int S means (S, S)).
      tile_overlap: share of a window its neighbour overlaps, in [0, 1).
      output_stride: the output stride the model is built at (None: the one it was trained
        at). Used by whoever builds the model from a checkpoint; a model passed in is run as
        it is.
      pad_to: None, or (h, w): the authors' evaluation, every image padded at the bottom and
        right to at least h x w before inference and the prediction cropped back.

    Raises:
      ConfigError (a ValueError): a setting out of its range, with the rule it breaks.
    """

    scales: tuple = (1.0,)
    flip: bool = False
    tile_size: tuple = None
    tile_overlap: float = 0.25
    output_stride: int = None
    pad_to: tuple = None

    def __post_init__(self):
        scales = tuple(float(s) for s in self.scales)
        if not scales:
            raise ConfigError("scales must name at least one input scale, e.g. (1.0,)")
        if any(not s > 0 for s in scales):
            raise ConfigError(f"scales must be positive, got {scales}")
        if len(set(scales)) != len(scales):
            raise ConfigError(f"scales must not repeat, got {scales}")
        overlap = float(self.tile_overlap)
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"tile_overlap must be in [0, 1), got {self.tile_overlap}")
        stride = self.output_stride
        if stride is not None and (int(stride) != stride or int(stride) < 0):
            raise ConfigError(f"output_stride must be a positive integer, got {stride}")
        set_ = object.__setattr__  # frozen: normalized once, here
        set_(self, "scales", scales)
        set_(self, "flip", bool(self.flip))
        set_(self, "tile_size", _size(self.tile_size, "tile_size"))
        set_(self, "tile_overlap", overlap)
        set_(self, "output_stride", int(stride) if stride else None)
        set_(self, "pad_to", _size(self.pad_to, "pad_to"))

    def replace(self, **changes):
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def is_default(self):
        """Whether these are the plain settings: one scale of 1, no flip, whole unpadded
        images, the trained output stride (the overlap of windows not used is no setting)."""
        return (
            self.scales == (1.0,)
            and not self.flip
            and not self.tile_size
            and not self.output_stride
            and not self.pad_to
        )

    def as_dict(self):
        """JSON-able ``{"output_stride", "scales", "flip"}``, with ``tile_size`` and
        ``tile_overlap`` when windows are used and ``pad_to`` when images are padded: the
        evaluation settings' keys as they were recorded before this object existed."""
        settings = {"output_stride": self.output_stride, "scales": self.scales, "flip": self.flip}
        if self.tile_size:
            settings.update(tile_size=self.tile_size, tile_overlap=self.tile_overlap)
        if self.pad_to:
            settings.update(pad_to=self.pad_to)
        return settings


__all__ = ["InferenceOptions"]
