"""A contact sheet: a few frames of each run's video for the same prompts and seeds, one PNG.

Rows are (prompt, seed), columns are runs (methods); each cell shows the first, middle and last
frames side by side, so a reader sees what "pass" looks like without opening every video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

PAD, LABEL_W, HEAD_H = 4, 220, 28
BG, INK, MISSING = (255, 255, 255), (20, 20, 20), (200, 60, 60)


def pick_frames(video: np.ndarray, n: int = 3) -> list[np.ndarray]:
    """``n`` evenly spaced frames of a uint8 ``(F, H, W, 3)`` video, first and last included."""
    idx = np.unique(np.linspace(0, len(video) - 1, n).round().astype(int))
    return [video[i] for i in idx]


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def contact_sheet(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
                  path: Path | str, frames: int = 3, scale: int = 2) -> Path:
    """Write the sheet to ``path`` (PNG). ``rows``: (label, one video or None per column)."""
    if not rows or not columns:
        raise ValueError("a contact sheet needs at least one row and one column")
    shapes = [v.shape[1:3] for _, vids in rows for v in vids if v is not None]
    h, w = (max(s[0] for s in shapes), max(s[1] for s in shapes)) if shapes else (32, 32)
    cell_w, cell_h = frames * w * scale + (frames - 1) * 2, h * scale
    sheet = Image.new("RGB", (LABEL_W + len(columns) * (cell_w + PAD) + PAD,
                              HEAD_H + len(rows) * (cell_h + PAD) + PAD), BG)
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((LABEL_W + j * (cell_w + PAD) + PAD, 8), str(name)[:40], fill=INK)
    for i, (label, videos) in enumerate(rows):
        y = HEAD_H + i * (cell_h + PAD) + PAD
        for k, line in enumerate(_wrap(label, 34)[: max(1, cell_h // 12)]):
            draw.text((PAD, y + k * 12), line, fill=INK)
        for j, video in enumerate(videos):
            x = LABEL_W + j * (cell_w + PAD) + PAD
            if video is None:
                draw.text((x, y + cell_h // 2 - 6), "no video", fill=MISSING)
                continue
            for f, frame in enumerate(pick_frames(video, frames)):
                tile = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale),
                                                     Image.NEAREST)
                sheet.paste(tile, (x + f * (w * scale + 2), y))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
