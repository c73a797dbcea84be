"""The shapes the lab's measurements are stated on, named once."""

from __future__ import annotations

#: Swin-T stage 1 at batch 8, ``(B, H, W, C)``: the shape the report's headline, the
#: traffic table, the profiles and the CLI's defaults are stated on.
SWIN_T_STAGE1: tuple[int, int, int, int] = (8, 56, 56, 96)
#: Swin-T's three merge inputs at 224x224, batch 8: stage 1, 2 and 3.
SWIN_T_STAGES: tuple[tuple[int, int, int, int], ...] = (
    SWIN_T_STAGE1,
    (8, 28, 28, 192),
    (8, 14, 14, 384),
)
#: A small stand-in for quick runs (``--quick``): the same C, a quarter of the pixels.
QUICK_SHAPE: tuple[int, int, int, int] = (2, 28, 28, 96)

__all__ = ["QUICK_SHAPE", "SWIN_T_STAGE1", "SWIN_T_STAGES"]
