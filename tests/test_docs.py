"""The README and docs/ stay true: every link resolves, and every command in their `sh` blocks names a
subcommand, options and make variables that exist (the commands' behaviour is what the other tests run)."""

import os
import re
import shlex

import click
import pytest

from conftest import REPO
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
    if name in ("README.md", "docs/cron.md", "docs/training.md", "docs/cluster.md", "docs/distributed.md", "docs/mixtures.md"):
        assert checked >= 3, f"{name}: its commands were not found"
