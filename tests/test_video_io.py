"""Video files: mp4 round trip, GIF preview, layout checks."""

from __future__ import annotations

import numpy as np
import pytest

from cvg_bench.video_io import read_video, write_gif, write_mp4


def _video(frames=6, size=32):
    v = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        v[t, 8:20, 4 + t: 16 + t] = (230, 30, 30)
    return v


def test_mp4_round_trip_keeps_size_frames_and_colour(tmp_path):
    video = _video(frames=6, size=34)  # not a multiple of 16: must not be padded
    path = write_mp4(tmp_path / "v.mp4", video)
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == np.uint8
    assert np.abs(back[:, 14, 10].astype(int) - video[:, 14, 10]).max() < 40
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp left


def test_gif_preview(tmp_path):
    path = write_gif(tmp_path / "v.gif", _video(), scale=2)
    assert path.read_bytes()[:6] in (b"GIF89a", b"GIF87a")


@pytest.mark.parametrize("bad", [np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8, 3), np.float32)])
def test_bad_layout_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="video must be"):
        write_mp4(tmp_path / "x.mp4", bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="video file not found"):
        read_video(tmp_path / "nope.mp4")
