"""foundation.locks: one writer per folder, refusals naming the holder, stale locks taken over."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from foundation.locks import LOCK_NAME, FolderLocked, folder_lock, pid_alive, rank0_lock, read_lock

HOST = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def _refusal(folder, pid, host=HOST) -> str:
    return rf"^{re.escape(str(folder))} is in use by another writer \(pid {pid} on host {re.escape(host)}, since "


def test_a_second_writer_is_refused_with_the_folder_pid_and_host_and_the_lock_records_its_owner(tmp_path):
    with folder_lock(tmp_path, purpose="test") as lock:
        info = read_lock(tmp_path)
        assert info["pid"] == os.getpid() and info["host"] == HOST and info["purpose"] == "test"
        assert info["started_at"].endswith("Z") and lock.held
        # not re-entrant: a second lock on the same folder, even in this process, is refused
        with pytest.raises(FolderLocked, match=_refusal(tmp_path, os.getpid())):
            with folder_lock(tmp_path):
                pass
        assert read_lock(tmp_path)["pid"] == os.getpid()     # the refused writer did not touch the lock
    assert not (tmp_path / LOCK_NAME).exists()
    with folder_lock(tmp_path):                              # released: free again
        pass


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with folder_lock(tmp_path / "run"):
            assert (tmp_path / "run" / LOCK_NAME).is_file()
            raise RuntimeError("boom")
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with folder_lock(tmp_path / "run"):
        pass


def test_a_folder_created_only_for_the_lock_is_removed_again_but_an_existing_one_is_kept(tmp_path):
    with folder_lock(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with folder_lock(tmp_path / "old"):
        pass
    assert (tmp_path / "old").is_dir()


@pytest.mark.parametrize("recorded_flock", [True, False])
def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, recorded_flock):
    dead = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": HOST, "started_at": "2020-01-01T00:00:00Z",
                                                  "command": "robust-features train", "flock": recorded_flock}))
    with folder_lock(tmp_path) as lock:
        assert lock.took_over["pid"] == dead
        assert read_lock(tmp_path)["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.skipif(os.name == "nt", reason="flock is POSIX")
def test_a_live_pid_whose_recorded_flock_is_free_was_reused_and_is_taken_over(tmp_path):
    alive = os.getppid()
    assert pid_alive(alive)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": alive, "host": HOST, "flock": True}))
    with folder_lock(tmp_path) as lock:
        assert lock.took_over["pid"] == alive
    # without a recorded flock the live pid is all there is to go on: refused
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": alive, "host": HOST, "flock": False}))
    with pytest.raises(FolderLocked, match=_refusal(tmp_path, alive)):
        with folder_lock(tmp_path):
            pass


def test_a_lock_from_another_host_is_never_taken_over_and_the_message_says_what_to_delete(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.example", "flock": True}))
    with pytest.raises(FolderLocked, match=r"on host elsewhere\.example.*if that process is gone, delete "
                                           + re.escape(str(tmp_path / LOCK_NAME))):
        with folder_lock(tmp_path):
            pass
    assert read_lock(tmp_path)["host"] == "elsewhere.example"


def test_an_unreadable_lock_is_respected_while_fresh_and_taken_over_once_old(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text("")                   # a creator that died (or is) between O_EXCL and its record
    with pytest.raises(FolderLocked, match="a process that has not yet recorded itself"):
        with folder_lock(tmp_path):
            pass
    old = time.time() - 60
    os.utime(path, (old, old))
    with folder_lock(tmp_path) as lock:
        assert lock.took_over == {}


def test_a_lock_held_by_another_process_is_refused_until_it_dies_then_taken_over(tmp_path):
    code = ("import sys, time\nfrom foundation.locks import FolderLock\n"
            "FolderLock(sys.argv[1], purpose='holder').acquire()\nprint('ready', flush=True)\ntime.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    with subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                          env=env) as proc:
        try:
            assert proc.stdout.readline().strip() == "ready"
            with pytest.raises(FolderLocked, match=_refusal(tmp_path, proc.pid)):
                with folder_lock(tmp_path):
                    pass
        finally:
            proc.kill()
    with folder_lock(tmp_path) as lock:         # SIGKILL left the file behind; its owner is gone
        assert lock.took_over["pid"] == proc.pid


def test_rank0_lock_takes_the_lock_on_rank_0_only(tmp_path):
    with rank0_lock(tmp_path, None) as lock:
        assert lock is not None and read_lock(tmp_path)["pid"] == os.getpid()
    other_rank = SimpleNamespace(is_distributed=False, is_main=False)
    with rank0_lock(tmp_path, other_rank) as lock:
        assert lock is None and read_lock(tmp_path) is None
    with folder_lock(tmp_path):
        with pytest.raises(FolderLocked):
            with rank0_lock(tmp_path, SimpleNamespace(is_distributed=False, is_main=True)):
                pass
