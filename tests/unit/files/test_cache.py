"""``cached_build``: one cached, atomic build with a manifest, for every builder (corpora, mined negatives)."""

from __future__ import annotations

import hashlib
import json

import pytest

from m3lit.files.cache import cached_build, read_manifest


class Builder:
    """Writes ``a.txt`` and ``sub/b.txt`` holding ``text``; counts its calls; raises when told to."""

    def __init__(self, text: str = "one", fail: bool = False) -> None:
        self.text, self.fail, self.calls = text, fail, 0

    def __call__(self, tmp):
        self.calls += 1
        (tmp / "a.txt").write_text(self.text, encoding="utf-8")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text(self.text * 2, encoding="utf-8")
        if self.fail:
            raise RuntimeError("build failed half-way")
        return {"sizes": {"files": 2}}


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir())


def test_the_manifest_records_settings_entries_and_hashes(tmp_path):
    out = tmp_path / "built"
    manifest = cached_build(out, {"version": 3, "spec": {"books": (1, 39)}}, Builder())
    digests = {
        name: hashlib.sha256(text.encode()).hexdigest()
        for name, text in [("a.txt", "one"), ("sub/b.txt", "oneone")]
    }
    assert manifest == {
        "version": 3,
        "spec": {"books": [1, 39]},  # JSON values: a tuple reads back as a list
        "sizes": {"files": 2},
        "sha256": digests,
        "hash": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest(),
    }
    assert read_manifest(out) == manifest
    assert list(cached_build(tmp_path / "some", {}, Builder(), files=["a.txt"])["sha256"]) == ["a.txt"]


def test_a_finished_build_with_the_same_settings_is_reused(tmp_path):
    out, build = tmp_path / "built", Builder()
    first = cached_build(out, {"version": 1, "spec": {"seed": 16}}, build)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = cached_build(out, {"version": 1, "spec": {"seed": 16}}, build)
    assert build.calls == 1 and again == first and (out / "manifest.json").stat().st_mtime_ns == stamp
    # a mapping is compared key by key: a setting that names one size checks that size only
    assert cached_build(out, {"sizes": {"files": 2}}, build) == first and build.calls == 1


def test_other_settings_or_force_rebuild_and_replace(tmp_path, capsys):
    out = tmp_path / "built"
    cached_build(out, {"version": 1}, Builder("one"))
    other = Builder("two")
    manifest = cached_build(out, {"version": 2}, other)
    assert other.calls == 1 and manifest["version"] == 2 and (out / "a.txt").read_text() == "two"
    assert "built with other settings: rebuilding it" in capsys.readouterr().err
    forced = Builder("three")
    assert cached_build(out, {"version": 2}, forced, force=True)["version"] == 2
    assert forced.calls == 1 and (out / "a.txt").read_text() == "three"
    assert _siblings(out) == ["built"]  # no temporary folder left beside it


def test_a_failed_build_leaves_nothing_half_made(tmp_path):
    out = tmp_path / "built"
    with pytest.raises(RuntimeError, match="half-way"):
        cached_build(out, {"version": 1}, Builder(fail=True))
    assert _siblings(out) == []  # neither the folder nor its temporary sibling
    finished = cached_build(out, {"version": 1}, Builder("kept"))
    for settings, force in [({"version": 2}, False), ({"version": 1}, True)]:
        with pytest.raises(RuntimeError, match="half-way"):
            cached_build(out, settings, Builder("lost", fail=True), force=force)
        assert read_manifest(out) == finished and (out / "a.txt").read_text() == "kept"
        assert _siblings(out) == ["built"]
