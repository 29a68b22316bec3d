"""The contact sheet puts each run's frames where its column and row say."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvg_bench.contact_sheet import HEAD_H, LABEL_W, PAD, contact_sheet, pick_frames


def test_frames_land_in_their_cells(tmp_path):
    red = np.zeros((5, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((5, 8, 8, 3), np.uint8)
    blue[..., 2] = 255
    blue[-1] = 0  # the last frame is black
    path = contact_sheet(["vanilla", "cvg"], [("a red circle (seed 0)", [red, blue]), ("another", [None, red])],
                         tmp_path / "sheet.png", frames=3, scale=2)
    img = np.asarray(Image.open(path).convert("RGB"))
    cell_w = 3 * 16 + 2 * 2
    y0 = HEAD_H + PAD
    x_van, x_cvg = LABEL_W + PAD, LABEL_W + (cell_w + PAD) + PAD
    assert tuple(img[y0 + 4, x_van + 4]) == (255, 0, 0)
    assert tuple(img[y0 + 4, x_cvg + 4]) == (0, 0, 255)  # first frame of the blue video
    assert tuple(img[y0 + 4, x_cvg + 2 * (16 + 2) + 4]) == (0, 0, 0)  # its last frame
    y1 = HEAD_H + (16 + PAD) + PAD
    assert tuple(img[y1 + 4, x_cvg + 4]) == (255, 0, 0)
    assert (img[y1:y1 + 16, x_van:x_van + cell_w] == 255).mean() > 0.7  # "no video": text, no frames
    assert not (img[y1:y1 + 16, x_van:x_van + cell_w] == (255, 0, 0)).all(-1).any()


def test_pick_frames_and_empty_sheet(tmp_path):
    video = np.arange(7)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    assert [int(f[0, 0, 0]) for f in pick_frames(video, 3)] == [0, 3, 6]
    with pytest.raises(ValueError, match="at least one row"):
        contact_sheet(["a"], [], tmp_path / "x.png")
