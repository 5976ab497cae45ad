"""Frame sources: folders, video files (PyAV), arrays; streaming in both directions; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from repvit_sam.video.frames import ArrayFrames, FolderFrames, FrameError, VideoFileFrames, open_frames
from repvit_sam.video.output import VideoWriter


def frames_with_marks(n, h=48, w=64):
    """Frame t has a bright column at x = 4 + 3t: the frame index can be read back from pixels,
    even after lossy video coding."""
    out = []
    for t in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        f[:, 4 + 3 * t : 7 + 3 * t] = 230
        out.append(f)
    return out


def index_of(frame):
    col = frame[:, :, 0].mean(axis=0)
    return int((np.argmax(col > 128) - 4) // 3)


def test_folder_natural_order_and_both_directions(tmp_path):
    frames = frames_with_marks(12)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"f{t}.png")  # f10 after f9 in natural order
    (tmp_path / "notes.txt").write_text("not a frame")
    src = open_frames(tmp_path)
    assert isinstance(src, FolderFrames) and len(src) == 12 and src.size == (48, 64)
    assert [index_of(f) for _, f in src.frames(0, 12)] == list(range(12))
    back = list(src.frames(11, -1, -1))
    assert [i for i, _ in back] == list(range(11, -1, -1))
    assert [index_of(f) for _, f in back] == list(range(11, -1, -1))


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_video_file_streams_forward_and_backward(tmp_path, suffix, monkeypatch):
    frames = frames_with_marks(20)
    path = tmp_path / f"clip{suffix}"
    with VideoWriter(path, 10.0, (48, 64)) as vw:
        for f in frames:
            vw.write(f)
    monkeypatch.setattr("repvit_sam.video.frames.BACKWARD_CHUNK", 6)  # several backward chunks
    src = open_frames(path)
    assert isinstance(src, VideoFileFrames)
    assert len(src) == 20 and src.size == (48, 64) and src.fps == pytest.approx(10.0)
    assert [index_of(f) for _, f in src.frames(0, 20)] == list(range(20))
    assert [index_of(f) for _, f in src.frames(13, 20)] == list(range(13, 20))  # seek into the middle
    back = list(src.frames(19, 2, -1))
    assert [i for i, _ in back] == list(range(19, 2, -1))
    assert [index_of(f) for _, f in back] == list(range(19, 2, -1))
    assert index_of(src[7]) == 7


def test_arrays_convert_and_check_size():
    src = open_frames([np.zeros((10, 12), np.uint8), np.zeros((10, 12, 3), np.float32)])
    assert isinstance(src, ArrayFrames) and src[0].shape == (10, 12, 3) and src[0].dtype == np.uint8
    src = open_frames([np.zeros((10, 12, 3), np.uint8), np.zeros((11, 12, 3), np.uint8)])
    with pytest.raises(FrameError, match="frame 1 of the frame list is 12x11 but the first frame is 12x10"):
        src[1]
    with pytest.raises(FrameError, match="empty"):
        open_frames([])


def test_folder_size_change_and_corrupt_frame(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "00000.png")
    Image.fromarray(np.zeros((21, 30, 3), np.uint8)).save(tmp_path / "00001.png")
    (tmp_path / "00002.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    src = open_frames(tmp_path)
    it = src.frames(0, 3)
    next(it)
    with pytest.raises(FrameError) as e:
        next(it)
    assert "frame 1 of" in str(e.value) and "30x21" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FrameError) as e:
        src[2]
    assert "frame 2 (00002.jpg)" in str(e.value) and "\n" not in str(e.value)


def test_unreadable_video_and_missing_paths(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(FrameError, match="cannot read video") as e:
        open_frames(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(FrameError, match="video not found"):
        open_frames(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrameError, match="no image files"):
        open_frames(tmp_path / "empty")
    img = tmp_path / "one.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    with pytest.raises(FrameError, match="is one image, not a video"):
        open_frames(img)


def test_damaged_video_gives_one_line_errors(tmp_path):
    """A cut or scrambled file either decodes the frames it still has or stops with a FrameError
    naming the file; never a raw FFmpeg exception."""
    path = tmp_path / "clip.avi"
    with VideoWriter(path, 10.0, (48, 64)) as vw:
        for f in frames_with_marks(15):
            vw.write(f)
    data = bytearray(path.read_bytes())
    cut = tmp_path / "cut.avi"
    cut.write_bytes(bytes(data[: len(data) * 2 // 3]))
    scrambled = tmp_path / "scrambled.avi"
    data[len(data) // 3 : len(data) // 3 + 2000] = bytes(2000)
    scrambled.write_bytes(bytes(data))
    for damaged in (cut, scrambled):
        try:
            src = open_frames(damaged)
            got = list(src.frames(0, len(src)))
            assert len(got) == len(src) and all(f.shape == (48, 64, 3) for _, f in got)
        except FrameError as e:
            assert damaged.name in str(e) and "\n" not in str(e)
