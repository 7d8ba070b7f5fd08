"""``--help`` of every command says what its help strings say, and the defaults they name.

Typer renders help with Rich markup, so a fragment in square brackets that is not a
Rich style (``[default: 7]``) silently disappears from the terminal.  These tests
render each command's ``--help`` the way a user sees it and compare with the declared
help texts; they also tie the defaults the help texts name to :class:`Config`.
"""

from __future__ import annotations

import re

import pytest
import typer
from rich.errors import StyleSyntaxError
from rich.markup import RE_TAGS
from rich.style import Style
from typer.testing import CliRunner

from atrisk.cli import app
from atrisk.config import Config

runner = CliRunner()
_BOX = re.compile(r"[│╭╮╰╯─]")


def _walk(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if hasattr(cmd, "commands"):  # a group (typer's own click)
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(typer.main.get_command(app)))


def _flat(text: str) -> str:
    """Text without the help panels' box lines, whitespace collapsed (wrapped cells join)."""
    return " ".join(_BOX.sub(" ", text).split())


def _is_style(tag: str) -> bool:
    if tag.startswith("/"):
        return True
    try:
        Style.parse(tag)
    except StyleSyntaxError:
        return False
    return True


def plain(help_text: str) -> str:
    """What a help string must show: Rich style tags removed, escaped brackets unescaped.

    A bracketed fragment that is not a style (``[default: 7]``) is text for the reader,
    so it stays: the rendered help must contain it.
    """

    def sub(m: re.Match) -> str:
        backslashes, tag = m.group(2), m.group(3)
        if len(backslashes) % 2:  # \[...] is a literal bracket
            return backslashes[:-1] + m.group(0)[len(backslashes):]
        return backslashes if _is_style(tag) else m.group(0)

    return _flat(RE_TAGS.sub(sub, help_text))


def render(path: tuple[str, ...]) -> str:
    """``atrisk PATH --help`` on a terminal wide enough that no help text wraps."""
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000", "TERMINAL_WIDTH": "1000"})
    assert r.exit_code == 0, r.output
    return _flat(r.output)


def test_plain_keeps_text_that_markup_would_swallow():
    assert plain("a [bold]b[/bold] c") == "a b c"
    assert plain("folder [default: x/y].") == "folder [default: x/y]."
    assert plain(r"folder \[default: x/y].") == "folder [default: x/y]."
    assert plain("trainCourse<ID>.csv[.gz]") == "trainCourse<ID>.csv[.gz]"


def test_every_command_is_checked():
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "extract", "train", "evaluate", "predict", "demo", "serve", "features text",
            "keys create", "keys list", "keys revoke", "asr evaluate", "asr finetune", "mooc train",
            "mooc evaluate"} <= names


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "atrisk")
def test_help_shows_every_help_text_whole(path):
    cmd = COMMANDS[path]
    shown = render(path)
    texts = {"command": cmd.help or ""}
    texts |= {f"{p.opts[0]}": p.help or "" for p in cmd.params}
    if hasattr(cmd, "commands"):
        texts |= {f"command {n}": sub.short_help or sub.help or ""
                  for n, sub in cmd.commands.items()}
    lost = {name: plain(t) for name, t in texts.items() if plain(t) not in shown}
    assert not lost, f"atrisk {' '.join(path)} --help lost text of {lost}"


#: Help texts that name a config default: (command, option) -> config key.
CONFIG_DEFAULTS = {
    (("extract",), "--asr-backend"): "asr.backend",
    (("extract",), "--asr-model"): "asr.model",
    (("extract",), "--prosody-backend"): "prosody.backend",
    (("train",), "--lookback"): "training.lookback",
    (("train",), "--weighting"): "training.weighting",
    (("train",), "--labels"): "training.labels",
    (("train",), "--balance"): "training.balance",
    (("train",), "--calibration"): "training.calibration",
    (("asr", "evaluate"), "--asr-backend"): "asr.backend",
    (("asr", "evaluate"), "--asr-model"): "asr.model",
    (("asr", "finetune"), "--epochs"): "asr_finetune.epochs",
    (("asr", "finetune"), "--max-steps"): "asr_finetune.max_steps",
    (("asr", "finetune"), "--batch-size"): "asr_finetune.batch_size",
    (("asr", "finetune"), "--grad-accum"): "asr_finetune.grad_accum",
    (("asr", "finetune"), "--checkpoint-every"): "asr_finetune.checkpoint_every",
}


@pytest.mark.parametrize(("where", "key"), CONFIG_DEFAULTS.items(),
                         ids=lambda x: " ".join(x[0]) + " " + x[1] if isinstance(x, tuple) else x)
def test_help_names_the_config_default(where, key):
    path, opt = where
    param = next(p for p in COMMANDS[path].params if opt in p.opts)
    section, name = key.split(".")
    value = getattr(getattr(Config(), section), name)
    assert f"(default: {value}, or {key} in --config)" in plain(param.help)


def test_finetune_learning_rate_help_names_both_bases_defaults():
    from atrisk.asr.finetune import CTC_LEARNING_RATE, WHISPER_LEARNING_RATE

    param = next(p for p in COMMANDS[("asr", "finetune")].params if "--learning-rate" in p.opts)
    assert Config().asr_finetune.learning_rate == 0  # 0: the base's own default
    assert (CTC_LEARNING_RATE, WHISPER_LEARNING_RATE) == (1e-4, 2e-5)
    assert ("(default: 1e-4 for a Wav2Vec2 base, 2e-5 for a Whisper base, or "
            "asr_finetune.learning_rate in --config)") in plain(param.help)


def test_demo_asr_model_default_is_the_config_default():
    param = next(p for p in COMMANDS[("demo",)].params if "--asr-model" in p.opts)
    assert f"(default: {Config().asr.model})" in plain(param.help)


def _takes(opt: str) -> set[str]:
    return {" ".join(p) for p, c in COMMANDS.items()
            if not hasattr(c, "commands") and any(opt in q.opts for q in c.params)}


def test_common_options_are_where_docs_cli_md_says():
    """docs/cli.md: --quiet all but serve and keys; --json all but serve and
    features text; --config extract, train, features text and asr …."""
    leaves = {" ".join(p) for p, c in COMMANDS.items() if not hasattr(c, "commands")}
    assert _takes("--quiet") == leaves - {"serve", "keys create", "keys list", "keys revoke"}
    assert _takes("--json") == leaves - {"serve", "features text"}
    assert _takes("--config") == {"extract", "train", "features text", "asr evaluate",
                                  "asr finetune"}
