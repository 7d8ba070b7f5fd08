"""``asr.backend = auto``: the order (Wav2Vec2 here, else Whisper, else pocketsphinx), the
printed choice, run.json and the resume key."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from atrisk.asr import auto
from atrisk.asr.auto import DEFAULT_WAV2VEC2, resolve_backend
from atrisk.config import ASRConfig, Config
from atrisk.errors import ConfigError
from atrisk.testing import small_recordings

whisper_missing = not auto.whisper_available()


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with nothing in it (the real one may hold models)."""
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    return cache


def cache_model(cache, repo_id: str) -> None:
    """Put ``repo_id``'s config.json into a Hugging Face cache as a download would."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")


def test_a_named_backend_is_kept():
    for name in ("wav2vec2", "whisper", "pocketsphinx", "transcripts"):
        choice = resolve_backend(ASRConfig(backend=name))
        assert choice.backend == name and choice.config.backend == name
        assert choice.reason == f"asr.backend = {name}"


@pytest.mark.skipif(whisper_missing, reason="the whisper extra is not installed")
def test_offline_auto_picks_the_bundled_whisper(empty_hf_cache):
    choice = resolve_backend(ASRConfig())
    assert ASRConfig().backend == "auto"
    assert choice.backend == "whisper" and choice.config.backend == "whisper"
    assert choice.config.whisper_model == ""  # the bundled tiny.en
    assert DEFAULT_WAV2VEC2 in choice.reason and "not in the Hugging Face cache" in choice.reason
    assert "tiny.en" in choice.reason


def test_a_cached_default_checkpoint_picks_wav2vec2(empty_hf_cache):
    cache_model(empty_hf_cache, DEFAULT_WAV2VEC2)
    assert auto.in_hf_cache(DEFAULT_WAV2VEC2)
    choice = resolve_backend(ASRConfig())
    assert choice.backend == "wav2vec2" and "cache" in choice.reason
    assert not auto.in_hf_cache("no such/id with spaces")  # malformed: not cached


def test_named_models_pick_their_backend(tmp_path, empty_hf_cache):
    w2v = tmp_path / "my-ctc"
    w2v.mkdir()
    (w2v / "config.json").write_text("{}")
    choice = resolve_backend(ASRConfig(model=str(w2v)))
    assert choice.backend == "wav2vec2" and choice.config.model == str(w2v)
    # a hub id other than the default: the user asked for it (downloaded once, said so)
    choice = resolve_backend(ASRConfig(model="someone/ctc-kids"))
    assert choice.backend == "wav2vec2" and "downloaded once" in choice.reason
    # a CTranslate2 Whisper folder given as --asr-model picks whisper with that folder
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"x")
    (ct2 / "vocabulary.txt").write_text("a\n")
    choice = resolve_backend(ASRConfig(model=str(ct2)))
    assert choice.backend == "whisper" and choice.config.whisper_model == str(ct2.resolve())


@pytest.mark.skipif(whisper_missing, reason="the whisper extra is not installed")
def test_a_faster_whisper_name_picks_whisper(empty_hf_cache):
    choice = resolve_backend(ASRConfig(model="small.en"))
    assert choice.backend == "whisper" and choice.config.whisper_model == "small.en"


def test_without_whisper_auto_falls_to_pocketsphinx_then_fails(empty_hf_cache, monkeypatch):
    monkeypatch.setattr(auto, "whisper_available", lambda: False)
    choice = resolve_backend(ASRConfig())
    assert choice.backend == "pocketsphinx"
    assert "atrisk[whisper]" in choice.reason  # says how to get the better one
    monkeypatch.setattr(auto, "available", lambda name: False)
    with pytest.raises(ConfigError, match="no speech recogniser.*atrisk\\[whisper\\]"):
        resolve_backend(ASRConfig())


@pytest.mark.skipif(whisper_missing, reason="the whisper extra is not installed")
def test_extract_auto_prints_records_and_shares_the_resume_key(tmp_path, empty_hf_cache):
    from atrisk.cli import app

    rec = small_recordings(tmp_path / "rec", n=2)
    runner = CliRunner()
    r = runner.invoke(app, ["extract", str(rec), "--out", str(tmp_path / "ws"), "--workers",
                            "1"])
    assert r.exit_code in (0, 1), r.output  # the last session has no student track
    assert "speech recognition: whisper (auto: no Wav2Vec2 checkpoint" in r.output
    run = json.loads((tmp_path / "ws" / "run.json").read_text())
    assert run["asr_requested"] == "auto" and run["asr_backend"] == "whisper"
    assert run["asr"] == "whisper:tiny.en" and run["asr_choice"].startswith("auto: ")
    saved = Config.load(tmp_path / "ws" / "config.toml")
    assert saved.asr.backend == "whisper"  # the resolved choice, not "auto"
    # naming the backend it chose reuses every session: the choice is the resume key
    r = runner.invoke(app, ["extract", str(rec), "--out", str(tmp_path / "ws"), "--workers",
                            "1", "--asr-backend", "whisper", "--json"])
    out = json.loads(r.output[r.output.index("{"):])
    assert out["n_resumed"] == out["n_sessions"] == 2
    # another backend is another key: nothing reused
    r = runner.invoke(app, ["extract", str(rec), "--out", str(tmp_path / "ws"), "--workers",
                            "1", "--asr-backend", "pocketsphinx", "--json"])
    out = json.loads(r.output[r.output.index("{"):])
    assert out["n_resumed"] == 0 and out["asr_backend"] == "pocketsphinx"
