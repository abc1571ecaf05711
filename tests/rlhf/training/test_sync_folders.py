"""The shm route's folders: a killed run's folder is removed by the next run on the same host and boot only."""

import os
import subprocess

from rlhf.training import sync_folders


def test_only_this_hosts_folders_of_ended_processes_are_removed(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    mine = sync_folders.new_folder(str(tmp_path))
    dead = mine.replace(f"-{os.getpid()}-", f"-{ended.pid}-")
    host, boot = sync_folders.owner().split("-")[0], sync_folders.boot_id()
    other_host = dead.replace(f"{sync_folders.PREFIX}{host}-", f"{sync_folders.PREFIX}elsewhere-")
    other_boot = dead.replace(boot, "00000000-0000-0000-0000-000000000000")
    unrelated = tmp_path / "rlhf-weights-notes"
    for folder in (mine, dead, other_host, other_boot, unrelated):
        os.makedirs(folder)
        (tmp_path / folder / "model.safetensors").write_bytes(b"x")

    assert sync_folders.remove_orphans(str(tmp_path)) == [os.path.basename(dead)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        os.path.basename(f) for f in (mine, other_host, other_boot, unrelated))
    assert sync_folders.remove_orphans(str(tmp_path / "missing")) == []
