"""Convert a CTranslate2 Whisper model to PyTorch (transformers) and back, without any download.

The bundled Whisper tiny.en ships only in CTranslate2 format (``model.bin``), which cannot
be trained.  Its weights are stored in float16 without quantisation, so they can be read
back exactly into a ``transformers.WhisperForConditionalGeneration``, fine-tuned there
(:mod:`atrisk.asr.finetune`), and written back into the same CTranslate2 layout so the
Whisper backend (faster-whisper) loads the result like the original.

``model.bin`` layout (``ctranslate2.specs.model_spec.ModelSpec._serialize``): a uint32
binary version, the spec name and a uint32 revision, then the variables, each a name, its
rank and dimensions, a dtype id (float32, int8, int16, int32, float16, bfloat16) and the
raw bytes, then the aliases (name -> variable name).  Strings are a uint16 length
(including a final NUL) and UTF-8 bytes.  The converter (``ctranslate2.converters.
transformers.WhisperLoader``) fuses the self-attention q/k/v projections into one
``linear_0`` (the k projection has no bias in Whisper: zeros are stored) and the
cross-attention k/v into ``linear_1``; the output projection is an alias of the token
embeddings.  This module inverts exactly that mapping.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atrisk.errors import ModelLoadError

#: CTranslate2 dtype ids, in the order of ``include/ctranslate2/types.h``.
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: Files besides model.bin that a CTranslate2 Whisper folder carries over unchanged.
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json",
              "preprocessor_config.json")


@dataclass
class Ct2Model:
    """The content of a CTranslate2 ``model.bin``.

    Attributes:
        version: Binary format version.
        name: Spec name (``"WhisperSpec"`` for Whisper).
        revision: Spec revision.
        variables: Name -> ``(dtype, shape, raw bytes)``, in file order.
        aliases: Alias name -> variable name.
    """

    version: int
    name: str
    revision: int
    variables: dict[str, tuple[str, tuple[int, ...], bytes]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def array(self, name: str) -> np.ndarray:
        """Return variable ``name`` (or the variable an alias points to) as a numpy array.

        Args:
            name: Variable or alias name.

        Returns:
            A read-only array of the stored dtype (bfloat16 is returned as float32).

        Raises:
            ModelLoadError: When there is no such variable.
        """
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise ModelLoadError(f"the CTranslate2 model has no variable {name!r}")
        dtype, shape, raw = self.variables[name]
        if dtype == "bfloat16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            return u.view(np.float32).reshape(shape)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)


def read_ct2_model(path: Path | str) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``.

    Args:
        path: The ``model.bin`` file (or the folder holding it).

    Returns:
        Its :class:`Ct2Model`.

    Raises:
        ModelLoadError: When the file is missing or truncated.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read CTranslate2 model {path}: {exc}") from exc
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = buf[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        model = Ct2Model(take("I"), string(), take("I"))
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype = CT2_DTYPES[take("B")]
            n = take("I")
            model.variables[name] = (dtype, shape, buf[pos : pos + n])
            if len(model.variables[name][2]) != n:
                raise struct.error("truncated variable")
            pos += n
        for _ in range(take("I")):
            alias = string()
            model.aliases[alias] = string()
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not a readable CTranslate2 model.bin ({exc}); "
                             "reinstall the model or point to another folder") from exc
    return model


def write_ct2_model(model: Ct2Model, path: Path | str) -> None:
    """Write a :class:`Ct2Model` as a CTranslate2 ``model.bin`` (the inverse of the reader).

    Args:
        model: The model to write.
        path: Output file.
    """

    def string(text: str) -> bytes:
        data = text.encode("utf-8")
        return struct.pack("<H", len(data) + 1) + data + b"\0"

    parts = [struct.pack("<I", model.version), string(model.name),
             struct.pack("<I", model.revision), struct.pack("<I", len(model.variables))]
    for name, (dtype, shape, raw) in model.variables.items():
        parts += [string(name), struct.pack("<B", len(shape)),
                  *(struct.pack("<I", d) for d in shape),
                  struct.pack("<B", CT2_DTYPES.index(dtype)), struct.pack("<I", len(raw)), raw]
    parts.append(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        parts += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(parts))


def _linear(ct2: str, hf: str, bias: bool = True) -> list[tuple[str, str]]:
    out = [(f"{ct2}/weight", f"{hf}.weight")]
    return out + [(f"{ct2}/bias", f"{hf}.bias")] if bias else out


def _norm(ct2: str, hf: str) -> list[tuple[str, str]]:
    return [(f"{ct2}/gamma", f"{hf}.weight"), (f"{ct2}/beta", f"{hf}.bias")]


def _one_to_one(n_enc: int, n_dec: int) -> list[tuple[str, str]]:
    """(CTranslate2 name, transformers key) of every weight that maps without fusing."""
    pairs = [*_linear("encoder/conv1", "model.encoder.conv1"),
             *_linear("encoder/conv2", "model.encoder.conv2"),
             ("encoder/position_encodings/encodings", "model.encoder.embed_positions.weight"),
             *_norm("encoder/layer_norm", "model.encoder.layer_norm"),
             ("decoder/embeddings/weight", "model.decoder.embed_tokens.weight"),
             ("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight"),
             *_norm("decoder/layer_norm", "model.decoder.layer_norm")]
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            pairs += [*_norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm"),
                      *_linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj"),
                      *_linear(f"{c}/ffn/linear_0", f"{h}.fc1"),
                      *_linear(f"{c}/ffn/linear_1", f"{h}.fc2"),
                      *_norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")]
            if side == "decoder":
                pairs += [*_norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm"),
                          *_linear(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj"),
                          *_linear(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")]
    return pairs


def _fused(n_enc: int, n_dec: int) -> list[tuple[str, list[str]]]:
    """(CTranslate2 prefix, transformers modules concatenated along the output axis)."""
    out = []
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            out.append((f"{c}/self_attention/linear_0",
                        [f"{h}.self_attn.{p}_proj" for p in "qkv"]))
            if side == "decoder":
                out.append((f"{c}/attention/linear_1",
                            [f"{h}.encoder_attn.{p}_proj" for p in "kv"]))
    return out


def _n_layers(ct2: Ct2Model, side: str) -> int:
    return len({k.split("/")[1] for k in ct2.variables
                if k.startswith(f"{side}/layer_") and k.split("/")[1][6:].isdigit()})


def whisper_config_from_ct2(ct2: Ct2Model) -> Any:
    """Build the ``transformers.WhisperConfig`` that matches a CTranslate2 Whisper model.

    Args:
        ct2: A parsed ``WhisperSpec`` model.

    Returns:
        The config (geometry from the variable shapes; special token ids of Whisper's
        tokenizer: ``<|endoftext|>`` 50256, ``<|startoftranscript|>`` 50257).

    Raises:
        ModelLoadError: When the model is not a Whisper model.
    """
    from transformers import WhisperConfig

    if ct2.name != "WhisperSpec":
        raise ModelLoadError(f"expected a CTranslate2 Whisper model, got a {ct2.name}")
    vocab, d_model = ct2.array("decoder/embeddings/weight").shape
    n_enc, n_dec = _n_layers(ct2, "encoder"), _n_layers(ct2, "decoder")
    heads_enc = int(ct2.array("encoder/num_heads"))
    heads_dec = int(ct2.array("decoder/num_heads"))
    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(ct2.array("encoder/conv1/weight").shape[1]),
        d_model=int(d_model), encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=heads_enc, decoder_attention_heads=heads_dec,
        encoder_ffn_dim=int(ct2.array("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(ct2.array("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(ct2.array("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(ct2.array("decoder/position_encodings/encodings").shape[0]),
        decoder_start_token_id=50257, bos_token_id=50256, eos_token_id=50256,
        pad_token_id=50256, tie_word_embeddings=True, scale_embedding=False,
        # the training recipe sets dropout itself; SpecAugment stays off
        apply_spec_augment=False,
    )


def ct2_to_transformers(folder: Path | str) -> tuple[Any, Ct2Model]:
    """Load a CTranslate2 Whisper folder as a float32 ``WhisperForConditionalGeneration``.

    Args:
        folder: Folder holding ``model.bin`` (e.g. :func:`atrisk.asr.whisper.bundled_model_dir`).

    Returns:
        ``(model, ct2)``: the transformers model in eval mode on the CPU and the parsed
        CTranslate2 model (the template :func:`save_ct2` writes into).

    Raises:
        ModelLoadError: When the folder holds no readable Whisper model or a weight does
            not fit the transformers geometry.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    ct2 = read_ct2_model(folder)
    config = whisper_config_from_ct2(ct2)
    model = WhisperForConditionalGeneration(config)
    n_enc, n_dec = config.encoder_layers, config.decoder_layers
    state: dict[str, Any] = {}
    for c, h in _one_to_one(n_enc, n_dec):
        state[h] = torch.from_numpy(ct2.array(c).astype(np.float32))
    for c, modules in _fused(n_enc, n_dec):
        w = torch.from_numpy(ct2.array(f"{c}/weight").astype(np.float32))
        b = torch.from_numpy(ct2.array(f"{c}/bias").astype(np.float32))
        for m, wk, bk in zip(modules, w.chunk(len(modules)), b.chunk(len(modules)),
                             strict=True):
            state[f"{m}.weight"] = wk.clone()
            if not m.endswith("k_proj"):  # Whisper's key projections have no bias
                state[f"{m}.bias"] = bk.clone()
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = [k for k in state
             if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        raise ModelLoadError(f"{folder}: the CTranslate2 weights do not fit a transformers "
                             f"Whisper model (missing {missing[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.eval(), ct2


def save_ct2(model: Any, template: Ct2Model, source: Path | str, out: Path | str) -> Path:
    """Write a transformers Whisper model as a CTranslate2 folder faster-whisper loads.

    The weights go into ``template``'s layout and dtypes (float16 for the bundled model);
    the side files (config.json, tokenizer.json, vocabulary.txt) are copied from ``source``.

    Args:
        model: A ``WhisperForConditionalGeneration`` of the template's geometry.
        template: The parsed model it was loaded from (:func:`ct2_to_transformers`).
        source: The folder the template came from.
        out: Output folder (created).

    Returns:
        ``out`` as a Path.
    """
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    new = Ct2Model(template.version, template.name, template.revision,
                   dict(template.variables), dict(template.aliases))

    def put(name: str, value: Any) -> None:
        dtype, shape, _ = template.variables[name]
        arr = np.ascontiguousarray(value.numpy().reshape(shape))
        if dtype == "bfloat16":
            raw = (arr.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            raw = arr.astype(np.dtype(dtype)).tobytes()
        new.variables[name] = (dtype, shape, raw)

    for c, h in _one_to_one(cfg.encoder_layers, cfg.decoder_layers):
        put(c, state[h])
    for c, modules in _fused(cfg.encoder_layers, cfg.decoder_layers):
        put(f"{c}/weight", torch.cat([state[f"{m}.weight"] for m in modules]))
        put(f"{c}/bias", torch.cat([
            state[f"{m}.bias"] if f"{m}.bias" in state else torch.zeros(cfg.d_model)
            for m in modules]))
    write_ct2_model(new, out / "model.bin")
    for name in SIDE_FILES:
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, out / name)
    return out


def ct2_spec_name(folder: Path | str) -> str | None:
    """Return the spec name in a folder's ``model.bin`` header (``None`` when unreadable).

    Args:
        folder: A folder that may hold a CTranslate2 model.

    Returns:
        E.g. ``"WhisperSpec"``; ``None`` when there is no readable ``model.bin``.
    """
    path = Path(folder) / "model.bin"
    try:
        with path.open("rb") as fh:
            head = fh.read(4 + 2 + 256)
        (n,) = struct.unpack_from("<H", head, 4)
        return head[6 : 6 + n - 1].decode("utf-8")
    except (OSError, struct.error, UnicodeDecodeError):
        return None
