"""Output file naming (nothing a server sends can escape the job folder) and job-folder commits."""
from __future__ import annotations

import pytest

from libragen_core.batch.outputs import JobFolder, clean_stale_staging, safe_filename, unique_name


@pytest.mark.parametrize("name, subfolder, expected", [
    ("ComfyUI_00001_.png", "", "ComfyUI_00001_.png"),
    ("../../etc/passwd", "", "passwd"),
    ("..\\..\\windows\\system.ini", "", "system.ini"),
    ("/abs/path/x.webp", "", "x.webp"),
    ("x.png", "../..", "x.png"),
    ("x.png", "a/b", "a_b_x.png"),
    ("..", "", "output"),
    (".hidden", "", "hidden"),
    ("", "", "output"),
    ("a b\x00c\n.png", "", "a_b_c_.png"),
    ("über straße.mp4", "", "ber_stra_e.mp4"),
    ("CON.png", "", "_CON.png"),
    ("nul", "", "_nul"),
])
def test_safe_filename(name, subfolder, expected):
    assert safe_filename(name, subfolder) == expected


def test_safe_filename_stays_in_folder_and_short(tmp_path):
    hostile = ["../" * 20 + "x", "/", "\\", "...", "a/../../b", "~/.ssh/id_rsa", "a" * 1000 + ".png"]
    for name in hostile:
        for sub in ["", "..", "../../..", "/etc"]:
            out = safe_filename(name, sub)
            assert out and len(out) <= 150 and "/" not in out and "\\" not in out and not out.startswith(".")
            assert (tmp_path / out).resolve().parent == tmp_path.resolve()
    assert safe_filename("a" * 1000 + ".png").endswith(".png")


def test_unique_name():
    taken = {"x.png"}
    assert unique_name("y.png", taken, "node5") == "y.png"
    assert unique_name("X.PNG", taken, "node5") == "node5-X.PNG"
    taken |= {"node5-x.png"}
    assert unique_name("x.png", taken, "node5") == "node5-x-2.png"


def test_job_folder_replaces_whole_folder(tmp_path):
    old = tmp_path / "job1"
    old.mkdir()
    (old / "stale.png").write_bytes(b"old")
    f = JobFolder(tmp_path, "job1")
    (f.staging / "new.png").write_bytes(b"new")
    assert (old / "stale.png").exists()  # nothing visible changes before commit
    f.commit()
    assert sorted(p.name for p in (tmp_path / "job1").iterdir()) == ["new.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["job1"]
    g = JobFolder(tmp_path, "job2")
    (g.staging / "half.png").write_bytes(b"x")
    g.discard()
    assert not (tmp_path / "job2").exists() and [p.name for p in tmp_path.iterdir()] == ["job1"]


def test_clean_stale_staging_only_touches_its_own_folders(tmp_path):
    (tmp_path / ".job1.staging-abcd1234").mkdir()
    (tmp_path / ".job1.old-abcd1234").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "job1").mkdir()
    clean_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "job1"]
