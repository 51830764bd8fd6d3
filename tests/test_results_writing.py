"""Writers replace only regular files, and the temp files of a killed writer go at the folder's next write."""

from __future__ import annotations

import os
import socket
import stat
import time

from hostile import golden_folder, one_line_error, report


def test_report_o_replaces_only_regular_files(tmp_path):
    golden_folder(tmp_path)
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    for target, kind in ((device, "a character device"), (fifo, "a FIFO"), (link, "a symlink")):
        line = one_line_error(report(tmp_path / "golden", target))
        assert f"{target} is {kind}; the harness replaces only regular files" in line and "choose another -o" in line
    assert stat.S_ISCHR(device.lstat().st_mode) and stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    assert not (tmp_path / "elsewhere.html").exists() and not (tmp_path / "null.csv").exists()


def test_temp_files_left_by_a_killed_writer_go_at_the_folder_s_next_write(tmp_path):
    golden_folder(tmp_path)
    host = socket.gethostname()
    dead = tmp_path / f".r.html~{host}~999999999~abcd.tmp"  # no such pid
    old = tmp_path / f".predict.json~{host}~{os.getpid()}~ef01.tmp"  # a live pid, but an hour old
    live = tmp_path / f".plan.json~{host}~{os.getpid()}~2345.tmp"  # a live writer's, just now
    for path in (dead, old, live):
        path.write_text("partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert report(tmp_path / "golden", tmp_path / "r.html").returncode == 0
    assert not dead.exists() and not old.exists() and live.exists()
