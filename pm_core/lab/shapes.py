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
#: The four merge inputs of MONAI's SwinUNETR at a 96^3 input (feature_size 48, patch
#: size 2), batch 1, ``(B, D, H, W, C)``: stages 1 to 4.
SWIN_UNETR_96_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 48, 48, 48, 48),
    (1, 24, 24, 24, 96),
    (1, 12, 12, 12, 192),
    (1, 6, 6, 6, 384),
)
#: YOLOv5's input to ``Focus``, batch 1 at 640x640, ``(B, C, H, W)`` as YOLO runs it.
YOLO_640: tuple[int, int, int, int] = (1, 3, 640, 640)

__all__ = ["QUICK_SHAPE", "SWIN_T_STAGE1", "SWIN_T_STAGES", "SWIN_UNETR_96_STAGES", "YOLO_640"]
