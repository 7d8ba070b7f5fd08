"""Fine-tuning recipe: vocabulary, CTC head, a short CPU training, resume, load-back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atrisk.asr.finetune import LOG_FILE, build_vocab, finetune, load_base_model
from atrisk.cli import app
from atrisk.config import AsrFinetuneConfig
from atrisk.errors import ConfigError, ModelLoadError
from atrisk.testing import espeak_wav

runner = CliRunner()
SENTENCES = ("The cat sat.", "A dog ran!", "Hello there", "Write it down")
#: 4 clips, batches of 2: 2 optimizer steps per epoch; 4 steps = 2 epochs.
FAST = dict(max_steps=4, batch_size=2, checkpoint_every=2, log_every=1, learning_rate=1e-3,
            warmup_ratio=0.25)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ft-data")
    lines = ["path\ttext\tspeaker"]
    for i, s in enumerate(SENTENCES):
        espeak_wav(s, folder / "clips" / f"c{i}.wav", pitch=30 + 15 * i)
        lines.append(f"clips/c{i}.wav\t{s}\tspk{i % 2}")
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder / "train.tsv"


def test_build_vocab_hand_computed():
    vocab = build_vocab(["Hello, World!", "it’s"])
    chars = ["'", "d", "e", "h", "i", "l", "o", "r", "s", "t", "w"]
    assert vocab == {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", *chars])}
    with pytest.raises(ConfigError, match="empty"):
        build_vocab(["...", "[noise]"])


def test_ctc_head_kept_or_reinitialised(tiny_model_dir: Path, tmp_path: Path):
    from transformers import Wav2Vec2ForCTC

    cfg = AsrFinetuneConfig()
    base = Wav2Vec2ForCTC.from_pretrained(str(tiny_model_dir))
    same = json.loads((tiny_model_dir / "vocab.json").read_text())
    kept = load_base_model(str(tiny_model_dir), same, cfg)
    assert torch.equal(kept.lm_head.weight, base.lm_head.weight)
    assert kept.config.mask_time_prob == cfg.mask_time_prob and kept.training
    new = build_vocab(["abc"])
    fresh = load_base_model(str(tiny_model_dir), new, cfg)
    assert fresh.lm_head.out_features == len(new) == 8 and fresh.config.vocab_size == 8
    # the encoder weights are the base's
    assert torch.equal(fresh.wav2vec2.encoder.layers[0].attention.q_proj.weight,
                       base.wav2vec2.encoder.layers[0].attention.q_proj.weight)
    # a folder with only config.json: random init of that geometry
    (tmp_path / "geom").mkdir()
    (tmp_path / "geom" / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    rand = load_base_model(str(tmp_path / "geom"), new, cfg)
    assert rand.lm_head.out_features == 8
    assert not torch.equal(rand.wav2vec2.feature_projection.projection.weight,
                           base.wav2vec2.feature_projection.projection.weight)
    (tmp_path / "empty").mkdir()  # neither weights nor config.json
    with pytest.raises(ModelLoadError, match="cannot load base model"):
        load_base_model(str(tmp_path / "empty"), new, cfg)


def test_cli_finetune_then_evaluate_with_the_model(manifest: Path, tiny_model_dir: Path,
                                                   tmp_path: Path):
    out = tmp_path / "model"
    cfg = tmp_path / "ft.toml"
    cfg.write_text("[asr_finetune]\n" + "".join(f"{k} = {v}\n" for k, v in FAST.items()))
    r = runner.invoke(app, ["asr", "finetune", "--train", str(manifest), "--eval", str(manifest),
                            "--base", str(tiny_model_dir), "--out", str(out), "--device", "cpu",
                            "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (res["step"], res["total_steps"], res["finished"]) == (4, 4, True)
    assert res["vocab_size"] == len(build_vocab(list(SENTENCES))) == 5 + 14
    assert [e["step"] for e in res["epochs"]] == [2, 4]
    log = _log(out)
    steps = [e for e in log if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(e["loss"] > 0 and e["loss"] == e["loss"] for e in steps)
    assert steps[-1]["lr"] == 0.0  # linear decay to 0 at the last step
    assert all(0 <= e["eval_wer"] for e in log if e["event"] == "epoch")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]

    from atrisk.asr.wav2vec2 import Wav2Vec2Transcriber

    t = Wav2Vec2Transcriber.from_pretrained(str(out), device="cpu")
    assert t.processor.tokenizer.get_vocab() == build_vocab(list(SENTENCES))
    assert t.model.config.vocab_size == 19
    r = runner.invoke(app, ["asr", "evaluate", "--manifest", str(manifest), "--asr-backend",
                            "wav2vec2", "--asr-model", str(out), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["asr_model"] == f"wav2vec2:{out.resolve()}"
    assert ev["evaluated"] == 4 and ev["words"] == 11 and ev["wer"] >= 0


def test_resume_continues_where_it_stopped(manifest: Path, tiny_model_dir: Path, tmp_path: Path):
    """A run stopped at step 2 and resumed ends with the same weights as one run straight."""
    from safetensors.torch import load_file

    cfg = AsrFinetuneConfig(**FAST)
    straight = finetune(manifest, manifest, str(tiny_model_dir), tmp_path / "a", cfg,
                        device="cpu", progress=False)
    part = finetune(manifest, manifest, str(tiny_model_dir), tmp_path / "b", cfg, device="cpu",
                    stop_after_steps=2, progress=False)
    assert (part["step"], part["finished"]) == (2, False)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = finetune(manifest, manifest, str(tiny_model_dir), tmp_path / "b", cfg,
                       device="cpu", resume=True, progress=False)
    assert (resumed["step"], resumed["finished"]) == (4, True)
    log_b = _log(tmp_path / "b")
    events_b = [(e["event"], e.get("step")) for e in log_b]
    events_a = [(e["event"], e.get("step")) for e in _log(tmp_path / "a")]
    # after the resume the log goes on as the straight run's did after step 2 (the stopped
    # run had not scored epoch 0 yet, so that comes first)
    i, j = events_b.index(("resume", 2)), events_a.index(("step", 2))
    assert events_b[i + 1 :] == events_a[j + 1 :]
    assert events_b[i + 1 : i + 3] == [("epoch", 2), ("step", 3)]
    loss_a = {e["step"]: e["loss"] for e in _log(tmp_path / "a") if e["event"] == "step"}
    loss_b = {e["step"]: e["loss"] for e in log_b if e["event"] == "step"}
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert straight["eval_wer"] == pytest.approx(resumed["eval_wer"])
    with pytest.raises(ConfigError, match="vocabulary differs"):
        other = tmp_path / "other.tsv"
        other.write_text(manifest.read_text().replace("Hello there", "Zebra quiz"))
        (tmp_path / "clips").symlink_to(manifest.parent / "clips")
        finetune(other, manifest, str(tiny_model_dir), tmp_path / "b", cfg, device="cpu",
                 resume=True, progress=False)


def test_no_usable_training_clip(tmp_path: Path, tiny_model_dir: Path):
    import numpy as np
    import soundfile as sf

    from atrisk.asr.evaluate import read_manifest
    from atrisk.asr.finetune import _check_clips

    sf.write(tmp_path / "short.wav", np.zeros(1600, dtype=np.float32), 16000)  # 0.1 s
    m = tmp_path / "m.tsv"
    m.write_text("path\ttext\nmissing.wav\thello\nshort.wav\thi\nshort.wav\t[noise]\n")
    with pytest.raises(ConfigError, match="no usable training clip"):
        finetune(m, m, str(tiny_model_dir), tmp_path / "out", device="cpu", progress=False)
    rows, _ = read_manifest(m)
    # SpecAugment time masks of 10 frames need 11 frames of 20 ms: 3520 samples
    clips, errors = _check_clips(rows, str(m), 30.0, False, "train", 320 * 11)
    assert clips == [] and [e.row for e in errors] == [3, 4]
    assert "0.100 s, shorter than 0.220 s" in errors[0].reason
    assert "empty transcript" in errors[1].reason
    clips, _ = _check_clips(rows, str(m), 30.0, False, "eval")
    assert [c.row for c in clips] == [3]


@pytest.mark.gpu
def test_cuda_finetune_bf16(manifest: Path, tiny_model_dir: Path, tmp_path: Path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    res = finetune(manifest, manifest, str(tiny_model_dir), tmp_path / "gpu",
                   AsrFinetuneConfig(**FAST), device="cuda", progress=False)
    assert res["device"] == "cuda" and res["finished"]
    assert all(e["loss"] == e["loss"] for e in _log(tmp_path / "gpu") if e["event"] == "step")


def test_learning_rate_zero_means_the_bases_default():
    from atrisk.asr.finetune import CTC_LEARNING_RATE, WHISPER_LEARNING_RATE, with_learning_rate

    assert AsrFinetuneConfig().learning_rate == 0
    assert with_learning_rate(None, CTC_LEARNING_RATE).learning_rate == 1e-4
    assert with_learning_rate(AsrFinetuneConfig(), WHISPER_LEARNING_RATE).learning_rate == 2e-5
    # A rate the user set is kept, for either base.
    assert with_learning_rate(AsrFinetuneConfig(learning_rate=3e-5), CTC_LEARNING_RATE
                              ).learning_rate == 3e-5
