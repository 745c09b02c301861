"""The one file helper every reader and writer uses: regular files only, atomic writes, umask modes."""

from __future__ import annotations

import os
import stat

import pytest

from chipq.formats import fileio
from chipq.formats.fileio import (
    FileRefused,
    atomic_write,
    atomic_write_text,
    check_output,
    open_regular,
    read_regular,
    remove_stale_temps,
    replace_dir,
    replace_file,
)
from chipq.formats.writer import write_blob


def test_a_fifo_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(FileRefused, match="not a regular file .*FIFO"):
        open_regular(pipe, "blob")
    with pytest.raises(FileRefused, match="FIFO"):
        check_output(pipe)


def test_a_folder_and_a_missing_file_are_refused(tmp_path):
    with pytest.raises(FileRefused, match="folder"):
        open_regular(tmp_path)
    with pytest.raises(FileRefused, match="no such file"):
        open_regular(tmp_path / "nope")
    with pytest.raises(FileRefused, match="does not exist"):
        check_output(tmp_path / "nope" / "out")


def test_read_regular_refuses_before_reading_past_the_cap(tmp_path):
    path = tmp_path / "big"
    with open(path, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: refused from its size, never read
    with pytest.raises(FileRefused, match="more than the 1000"):
        read_regular(path, 1000)


def test_a_device_node_is_never_replaced(tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        pytest.skip("cannot create device nodes here")
    with pytest.raises(FileRefused, match="character device"):
        atomic_write(node, b"x")
    assert stat.S_ISCHR(node.lstat().st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, tiny_model, mask, mode):
    old = os.umask(mask)
    try:
        write_blob(tiny_model, tmp_path / "m.blob")
        atomic_write(tmp_path / "f", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.blob").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


def test_a_successful_write_removes_a_killed_writers_temp_files(tmp_path):
    out = tmp_path / "out.blob"
    stale = tmp_path / f"{fileio.temp_prefix(out)}abc123{fileio.TEMP_SUFFIX}"
    other = tmp_path / f"{fileio.temp_prefix(tmp_path / 'other.blob')}xyz{fileio.TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    other.write_bytes(b"someone else's")
    atomic_write(out, b"whole")
    assert out.read_bytes() == b"whole" and not stale.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "other.blob") == [other]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    out = tmp_path / "out"
    out.write_bytes(b"old")

    def boom(handle):
        handle.write(b"new")
        raise OSError(28, "No space left on device")

    with pytest.raises(FileRefused, match="No space left"):
        atomic_write(out, boom)
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_text_and_a_callback_are_written_like_bytes(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    atomic_write(tmp_path / "c.bin", lambda handle: handle.write(b"from a callback"))
    assert (tmp_path / "t.txt").read_bytes() == "héllo\n".encode()
    assert (tmp_path / "c.bin").read_bytes() == b"from a callback"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bin", "t.txt"]


def test_replace_file_and_replace_dir_swap_in_whole(tmp_path):
    made = tmp_path / "made"
    made.write_bytes(b"new")
    (tmp_path / "target").write_bytes(b"old")
    replace_file(made, tmp_path / "target")
    assert (tmp_path / "target").read_bytes() == b"new" and not made.exists()

    out = tmp_path / "out"
    for content in (b"first", b"second"):  # once into nothing, once over an existing folder
        staging = tmp_path / ".staging"
        staging.mkdir()
        (staging / "f").write_bytes(content)
        replace_dir(staging, out)
        assert (out / "f").read_bytes() == content and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target"]


def test_an_output_may_not_be_an_input_under_any_name(tmp_path):
    from chipq.formats.fileio import check_not_input, check_output, check_output_dir

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "alias.pt").symlink_to(model)
    os.link(model, tmp_path / "hard.pt")
    inputs = [("model", model), ("image folder", photos), ("blob", None)]
    for name in ("model.pt", "alias.pt", "hard.pt", "photos/new.npz", "photos/../model.pt"):
        with pytest.raises(FileRefused, match="model|image folder"):
            check_output(tmp_path / name, "blob", "--output", inputs=inputs)
    with pytest.raises(FileRefused, match="inside the image folder"):
        check_output_dir(photos / "vectors", "test-vector folder", "--vectors", inputs=inputs)
    check_not_input(tmp_path / "out.blob", inputs)  # a new name beside the inputs is fine
    assert model.read_bytes() == b"weights"


def test_one_writer_per_output(tmp_path):
    from chipq.formats.fileio import exclusive_output

    out = tmp_path / "d.npz"
    with exclusive_output(out, "descriptor file", "--output"):
        with pytest.raises(FileRefused, match="another chipq run is writing"):
            with exclusive_output(out, "descriptor file", "--output"):
                pass
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the run
    (tmp_path / ".d.npz.lock").write_bytes(b"")  # a killed run's lock: taken over, then removed
    with exclusive_output(out):
        pass
    assert list(tmp_path.iterdir()) == []
