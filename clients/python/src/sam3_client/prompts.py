"""Constructors of the prompt objects of image and video requests.

They return the plain dicts the API takes; any dict of the same shape may be sent instead.
The server validates prompts (a mismatch of points and labels is its 400 invalid_prompt),
so these only convert the values to JSON types.
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import BoxPrompt, PointPrompt, TextPrompt

__all__ = ["box_prompt", "point_prompt", "text_prompt"]


def text_prompt(text: str) -> TextPrompt:
    """A concept named by text, e.g. ``text_prompt("red car")``: every instance is returned."""
    return {"type": "text", "text": text}


def box_prompt(box: Sequence[float], label: bool = True) -> BoxPrompt:
    """A box ``[cx, cy, w, h]`` normalized to [0, 1] of the image size.

    With a text prompt it is a visual exemplar of that concept (``label=False``: a negative
    one); without text, boxes are exemplars of one "visual" concept; beside point prompts it
    is the clicked object's region hint.
    """
    return {"type": "box", "box": [float(v) for v in box], "label": bool(label)}


def point_prompt(
    points: Sequence[Sequence[float]],
    labels: Sequence[int | bool] | None = None,
) -> PointPrompt:
    """Clicks ``[x, y]`` (normalized to [0, 1]) on one object.

    ``labels`` has one entry per point: 1 (or True) for foreground, 0 (or False) for
    background; by default every point is foreground.
    """
    clicks = [[float(v) for v in point] for point in points]
    point_labels = [1] * len(clicks) if labels is None else [int(v) for v in labels]
    return {"type": "point", "points": clicks, "point_labels": point_labels}
