"""Several app processes on one data folder: the image store's leases, its lock, exports, the archive.

The policy is in ``llava_app/storage/leases.py``; here it runs with a fake clock (file
times set to match it), and with real processes where a process's life or its lock is
the point. The end-to-end check with two app servers is ``test_shared_data_dir.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import RecordingBackend
from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.storage.export import new_export_folder
from llava_app.storage.images import ImageStore
from llava_app.storage.leases import fcntl, stale_after
from llava_app.storage.saved import SavedConversations

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    """Wall-clock time that moves only when told."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _age(path, clock: Clock, seconds: float) -> None:
    """Make a file look written ``seconds`` before the fake now."""
    os.utime(path, (clock.now - seconds, clock.now - seconds))


def _picture(color: str):
    return Image.new("RGB", (8, 8), color)


@pytest.fixture
def clock():
    return Clock()


def test_a_fresh_lease_keeps_another_instances_files_until_it_goes_stale(tmp_path, clock):
    a, b = ImageStore(tmp_path / "img", clock=clock), ImageStore(tmp_path / "img", clock=clock)
    used, unused = a.put(_picture("red")), b.put(_picture("blue"))
    for s in (used, unused):
        _age(s.path, clock, 3600)
    a.leases.write({used.sha256})  # A's housekeeping pass: its lease names what it uses
    assert b.sweep(set(), grace_s=1) == 1
    assert os.path.exists(used.path) and not os.path.exists(unused.path)
    window = stale_after(a.leases.interval_s)
    clock.now += window - 1
    assert b.sweep(set(), grace_s=1) == 0 and os.path.exists(used.path), "a fresh lease was not honoured"
    clock.now += 2  # A wrote nothing for longer than its window: it is gone, and so is what it held
    assert b.sweep(set(), grace_s=1) == 1 and not os.path.exists(used.path)
    assert not a.leases.path.exists(), "the stale lease was left behind"


def test_an_upload_no_lease_names_yet_waits_for_its_instances_window(tmp_path, clock):
    a, b = ImageStore(tmp_path / "img", clock=clock), ImageStore(tmp_path / "img", clock=clock)
    a.leases.interval_s = 1.0  # A rewrites its lease every second: window 33 s
    a.leases.write(set())
    new = a.put(_picture("green"))
    _age(new.path, clock, 0)
    clock.now += stale_after(1.0) - 1
    a.leases.write(set())  # A is alive but its lease does not name the upload (yet)
    assert b.sweep(set(), grace_s=1) == 0 and os.path.exists(new.path)
    clock.now += 2
    a.leases.write(set())
    assert b.sweep(set(), grace_s=1) == 1, "an unnamed file outlived every window"


def test_alone_a_store_keeps_only_its_own_grace(tmp_path, clock):
    store = ImageStore(tmp_path / "img", clock=clock)
    store.leases.write(set())  # its own lease never extends its own grace
    s = store.put(_picture("red"))
    _age(s.path, clock, 2)
    assert store.sweep(set(), grace_s=1) == 1


_INSTANCE = """
import os, sys
from PIL import Image
from llava_app.storage.images import ImageStore
store = ImageStore(sys.argv[1])
stored = store.put(Image.new("RGB", (8, 8), sys.argv[2]))
store.sweep({stored.sha256}, grace_s=60)
print(stored.path, flush=True)
if sys.argv[3] == "crash":
    os._exit(0)  # no clean exit: the lease stays behind
"""


def _instance(root: Path, color: str, how: str) -> Path:
    done = subprocess.run([sys.executable, "-c", _INSTANCE, str(root), color, how], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_a_clean_exit_withdraws_the_lease_and_a_crashed_process_counts_for_nothing(tmp_path, clock):
    root = tmp_path / "img"
    clean = _instance(root, "red", "exit")
    assert not list((root / "instances").glob("*.json")), "a clean exit left its lease"
    crashed = _instance(root, "blue", "crash")
    leases = list((root / "instances").glob("*.json"))
    assert len(leases) == 1 and crashed.stem in json.loads(leases[0].read_text())["hashes"]
    for path in (clean, crashed):
        _age(path, clock, 3600)
    # Its lease is young, but its process is gone (same host): the sweep drops both.
    assert ImageStore(root, clock=clock).sweep(set(), grace_s=60) == 2
    assert not leases[0].exists()


def test_a_withdrawn_lease_stays_withdrawn_when_a_sweep_writes_after_it(tmp_path, clock):
    """At exit the lease is withdrawn while the housekeeping thread may still be in a sweep: a sweep that writes
    after it, or is writing as it comes, leaves no lease behind a process that is gone."""
    store = ImageStore(tmp_path / "images", clock=clock)
    store.put(_picture("red"))
    leases = store.leases
    assert leases.path.exists()
    leases.remove()
    leases.write({"a" * 64})  # the sweep that ran on after the exit began
    leases.ensure()
    assert not leases.path.exists()

    other = ImageStore(tmp_path / "images2", clock=clock).leases
    other.ensure()
    writing, go_on = threading.Event(), threading.Event()
    original = other._write

    def slow_write(hashes):
        writing.set()
        go_on.wait(10)
        original(hashes)

    other._write = slow_write
    sweep = threading.Thread(target=other.write, args=({"b" * 64},))
    sweep.start()
    assert writing.wait(10)
    withdraw = threading.Thread(target=other.remove)
    withdraw.start()
    withdraw.join(0.5)
    assert withdraw.is_alive()  # it waits for the write in progress, rather than unlinking under it
    go_on.set()
    sweep.join(10)
    withdraw.join(10)
    assert not other.path.exists()


def test_a_lease_of_another_host_is_judged_by_its_age_alone(tmp_path, clock):
    a = ImageStore(tmp_path / "img", clock=clock)
    used = a.put(_picture("red"))
    _age(used.path, clock, 3600)
    a.sweep({used.sha256}, grace_s=1)
    record = json.loads(a.leases.path.read_text())
    record.update(host="elsewhere", pid=2**22 + 7)  # a pid this host cannot check
    a.leases.path.write_text(json.dumps(record))
    assert ImageStore(tmp_path / "img", clock=clock).sweep(set(), grace_s=1) == 0


_HOLDER = """
import os, sys, time
from llava_app.storage.leases import FilesLock
with FilesLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(1.0)
    os.utime(sys.argv[2])  # what put does to a file it finds: reuse it
"""


@pytest.mark.skipif(fcntl is None, reason="no flock on this platform")
def test_a_sweep_waits_for_another_process_reusing_a_file(tmp_path):
    store = ImageStore(tmp_path / "img")
    s = store.put(_picture("red"))
    os.utime(s.path, (time.time() - 3600,) * 2)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store.root / ".lock"), s.path], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.sweep(set(), grace_s=60) == 0, "the sweep deleted a file another process was reusing"
        assert os.path.exists(s.path)
    finally:
        assert holder.wait(60) == 0



    def forget(self, conv_id: str) -> None:
        pass


def test_a_lease_is_written_before_the_first_upload_and_each_pass_names_what_conversations_use(
        tmp_path, image_files):
    store = ImageStore(tmp_path / "img")
    service = ChatService(RecordingBackend(), store, session_ttl=3600)
    assert not store.leases.path.exists()  # a process that stores nothing holds nothing
    conv = Conversation()
    service.add_images(conv, [(str(image_files[0]), "a.png")])
    assert store.leases.path.stat().st_mtime_ns <= Path(conv.images[0].path).stat().st_mtime_ns
    lease = json.loads(store.leases.path.read_text())
    assert lease["interval_s"] == 60 and lease["hashes"] == [] and lease["pid"] == os.getpid()
    service.housekeep()
    assert json.loads(store.leases.path.read_text())["hashes"] == [conv.images[0].sha256]
    service.forget(conv)
    service.housekeep()
    assert json.loads(store.leases.path.read_text())["hashes"] == []


def test_export_folders_shared_by_processes(tmp_path, monkeypatch):
    exports = tmp_path / "exports"
    exports.mkdir()
    now = time.time()
    for i in range(5):
        (exports / f"export-old{i}").mkdir()
        os.utime(exports / f"export-old{i}", (now - 3600 + i,) * 2)
    (exports / "export-young").mkdir()  # another process's export, a minute old
    os.utime(exports / "export-young", (now - 60,) * 2)
    listed = Path.iterdir
    # Another process removes a folder between our listing and our look at it.
    monkeypatch.setattr(Path, "iterdir", lambda self: iter([*listed(self), self / "export-gone"]))
    new = new_export_folder(exports, keep=1, min_age_s=600)
    assert sorted(p.name for p in listed(exports)) == sorted(["export-young", new.name])


def test_an_archived_link_starts_its_grace_when_linked(tmp_path, store, image_files):
    from conftest import attach_file

    conv = Conversation()
    ref = attach_file(conv, store, image_files[0])
    os.utime(ref.path, (time.time() - 3600,) * 2)  # an upload of an hour ago
    archive = SavedConversations(tmp_path / "h.sqlite3", tmp_path / "files")
    archive.save("key", conv.to_record())
    assert archive.file_for(ref.sha256).stat().st_mtime > time.time() - 60


def test_processes_starting_on_a_new_folder_share_one_secret(tmp_path):
    for round_ in range(5):  # a race: several rounds, so that the old code's failure shows
        folder = tmp_path / str(round_)
        archives = [SavedConversations(folder / "h.sqlite3", folder / "files") for _ in range(8)]
        start = threading.Barrier(len(archives))
        secrets: list[str] = []

        def read(archive, start=start, secrets=secrets):
            start.wait()
            secrets.append(archive.secret())

        threads = [threading.Thread(target=read, args=(a,)) for a in archives]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(secrets) == 8 and len(set(secrets)) == 1 and secrets[0]
        assert [p.name for p in folder.iterdir() if p.suffix == ".tmp"] == []
