"""The README and docs/ stay true: every link resolves, every command in their `sh` blocks names a
subcommand, options and make variables that exist, and the README's commands that need no network, cluster
or GPU run as written (on small stand-ins, budgets cut to a few steps)."""

import json
import os
import re
import shlex

import click
import pytest

from conftest import REPO
from prepare import format as fmt
from prepare.cli import cli as prepare_cli
from train.cli import cli as train_cli

DOCS = ["README.md"] + sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md"))
CLIS = {"prepare": prepare_cli, "train": train_cli}


def read(name):
    with open(os.path.join(REPO, name)) as f:
        return f.read()


def sh_lines(name):
    """Every command line of the file's ```sh blocks, its comments dropped."""
    for block in re.findall(r"```sh\n(.*?)```", read(name), re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                yield line, words


def options_of(command):
    return {opt for p in command.params for opt in p.opts + p.secondary_opts}


def test_the_readme_is_short_and_links_every_doc():
    readme = read("README.md")
    assert len(readme.splitlines()) < 160
    assert readme.index("make train") < readme.index("make test") < 600, "the two commands come first"
    for name in DOCS[1:]:
        assert f"({name})" in readme, f"README does not link {name}"


@pytest.mark.parametrize("name", DOCS)
def test_every_relative_link_resolves(name):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", read(name)):
        assert os.path.exists(os.path.join(REPO, os.path.dirname(name), target)), f"{name} links {target}"


@pytest.mark.parametrize("name", DOCS)
def test_every_command_names_what_exists(name):
    makefile = read("Makefile")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    checked = 0
    for line, words in sh_lines(name):
        words = [w.strip("[]") for w in words]
        if "-m" in words and words[words.index("-m") + 1] in CLIS:
            at = words.index("-m") + 1
            group = CLIS[words[at]]
            command = group.commands.get(words[at + 1])
            assert isinstance(command, click.Command), f"{name}: {line!r}: no such subcommand"
            for word in words[at + 2 :]:
                if word.startswith("--"):
                    assert word.split("=")[0] in options_of(command), f"{name}: {line!r}: {word} is not an option"
            checked += 1
        elif words[0] == "make":
            goals = [w for w in words[1:] if "=" not in w]
            assert all(g in targets for g in goals), f"{name}: {line!r}: no such make target"
            for variable in (w.split("=")[0] for w in words[1:] if "=" in w):
                assert re.search(rf"\b{variable}\b", makefile), f"{name}: {line!r}: the Makefile has no {variable}"
            checked += 1
    if name in ("README.md", "docs/continual.md", "docs/cron.md", "docs/training.md", "docs/cluster.md", "docs/distributed.md", "docs/mixtures.md"):
        assert checked >= 3, f"{name}: its commands were not found"


# The README's own commands, run: each names a small stand-in for what it reads (made here), budgets shrink to a
# few steps, and the lines that need the network, a cluster or a GPU are left to the checks above.
NEEDS_MORE = ("hf:", "SOURCES...", "/shared/")
SMALL_FIT = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context", "32", "--batch-size", "2",
             "--tokens-per-step", "64", "--no-compile", "--device", "cpu", "--no-samples", "--eval-windows", "2"]


def readme_stand_ins(root):
    """The files the README's commands read, small."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import prepare, write
    from prepare.sources import stdlib_files

    for i, f in enumerate(stdlib_files()[600:630]):
        write(root / "books" / f"shelf{i % 3}" / f"{i}.txt", open(f, encoding="utf-8", errors="replace").read())
    write(root / "notes.md", "# Notes\n\nA few words about gptmill.\n")
    with gzip.open(root / "dump.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"body": f"record {i}: " + "some text " * i}) + "\n" for i in range(1, 40))
    pq.write_table(pa.table({"body": [f"row {i} of the export " * 3 for i in range(40)]}), root / "export.parquet")
    for i in range(5):
        write(root / "home" / "corpus" / f"{i}.txt", "\n\n".join(f"Paragraph {j} of file {i}: words and more words." for j in range(20)))
    for name, files in (("stdlib", stdlib_files()[630:660]), ("web", stdlib_files()[660:680]), ("code", stdlib_files()[680:700])):
        prepare("build", *files, "--out", root / "data" / name, "--val-fraction", 0.2)


def test_the_readme_commands_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from test_scoring import write_task_files

    readme_stand_ins(tmp_path)
    monkeypatch.setenv("GPTMILL_CACHE", str(write_task_files(tmp_path / "cache")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ran = []
    for line, words in sh_lines("README.md"):
        if words[:2] != ["python", "-m"] or any(marker in line for marker in NEEDS_MORE):
            continue
        words = [os.path.expanduser(w) for w in words[2:] if not (w.startswith("[") or w.endswith("]"))]
        stage, command = words[0], words[1]
        if command == "fit":
            resume = "--resume" in words
            for option in ("--max-time", "--max-steps"):
                if option in words:
                    at = words.index(option)
                    words[at : at + 2] = []
            words += ["--max-steps", "3" if resume else "2"] + ([] if resume else SMALL_FIT)
        if command == "sample":
            words += ["--max-new-tokens", "4"]
        result = CliRunner().invoke(CLIS[stage], words[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"README: {line!r}:\n{result.output}"
        ran.append(command)
    assert ran.count("fit") == 3 and {"build", "tokenizer", "compare", "info", "verify", "compact", "gc", "sample", "eval", "score", "export"} <= set(ran)


def test_the_continual_recipe_runs(tmp_path, monkeypatch):
    """docs/continual.md's commands, in order, on a corpus that grows between two nights: the last night's
    `train nightly` says one line per stage."""
    from click.testing import CliRunner

    from conftest import write
    from prepare.sources import stdlib_files

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    corpus = tmp_path / "home" / "corpus"
    for i, f in enumerate(stdlib_files()[700:708]):
        write(corpus / f"{i}.py", open(f, "rb").read()[:4000], mode="wb")
    invoke = lambda stage, words: CliRunner().invoke(CLIS[stage], words, catch_exceptions=False)  # noqa: E731
    last = []
    for line, words in sh_lines("docs/continual.md"):
        if words[:2] != ["python", "-m"]:
            continue
        words = [os.path.expanduser(w) for w in words[2:] if not (w.startswith("[") or w.endswith("]"))]
        if "--session-steps" in words:
            words[words.index("--session-steps") + 1] = "2"
        if words[1] == "fit" and "--resume" not in words:
            words += SMALL_FIT
        if words[1] == "unpin":  # after the next night, which needs what the pin keeps
            last.append((line, words))
            continue
        result = invoke(words[0], words[1:])
        assert result.exit_code == 0, f"docs/continual.md: {line!r}:\n{result.output}"
    write(corpus / "new.py", "def arrived_tonight():\n    return 'new'\n")  # one window: the night's first step draws it
    invoke("prepare", ["build", str(corpus), "--out", "data/corpus"])
    from train.report import Report  # the night's lines come from the stages' values, not from their words

    monkeypatch.setattr(Report, "done", lambda self, result: self.say("finished"))
    result = invoke("train", ["nightly", "runs/night", "--session-steps", "2"])
    assert result.exit_code == 0, result.output
    assert [line.split(" ")[0] for line in result.output.splitlines()] == ["fit", "cooldown", "eval", "export"], result.output
    assert "new documents: 1 of the 1 added since the last session drawn in full" in result.output
    for line, words in last:
        words[3] = next(n for n, pin in fmt.read_pins("data/corpus").items() if pin["run"] == os.path.abspath("runs/night"))
        assert invoke(words[0], words[1:]).exit_code == 0, line
