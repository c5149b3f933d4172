"""Continual pretraining, measured (`make bench BENCH=continual`, issue #37): a corpus that grows night by night
(CPython's stdlib modules in path order, cut into nights), trained (a) by one open run resumed and cooled down
each night, (b) by a fresh run each night, (c) by one fresh run on the final corpus at the same compute; each
scored on the final corpus and on the first night's documents (forgetting). Arms, settings and figures:
docs/benchmarks.md, Continual pretraining.
"""

import json
import os
import shlex
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prepare.cli import cli as prepare_cli  # noqa: E402
from prepare.sources import stdlib_files  # noqa: E402
from train.cli import cli as train_cli  # noqa: E402
from train.cooldown import COOLDOWN_FRACTION  # noqa: E402

NIGHTS = int(os.environ.get("CONTINUAL_NIGHTS", 6))
STEPS = int(os.environ.get("CONTINUAL_STEPS", 100))
SEEDS = [int(s) for s in os.environ.get("CONTINUAL_SEEDS", "1,2").split(",")]
EVERY = int(os.environ.get("CONTINUAL_FILES", 8))
MODEL = shlex.split(os.environ.get(
    "CONTINUAL_ARGS", "--model tiny-llama --n-layer 2 --n-head 2 --n-embd 64 --context 128 --batch-size 16"))
COMMON = ["--no-compile", "--device", "cpu", "--dtype", "fp32", "--no-samples", "--eval-every", "0",
          "--eval-windows", "16", "--ckpt-every", "0"]
COOLDOWN = max(1, round(COOLDOWN_FRACTION * STEPS))
LAST_COOLDOWN = int(os.environ.get("CONTINUAL_LAST_COOLDOWN", COOLDOWN))
ARMS = os.environ.get("CONTINUAL_ARMS", "abc")
REPLAY = ["--replay", os.environ["CONTINUAL_REPLAY"]] if os.environ.get("CONTINUAL_REPLAY") else []


def invoke(cli, *args):
    """A CLI command in-process (no interpreter start per command); its output, or exit naming it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            cli.main([str(a) for a in args], standalone_mode=False)
        except SystemExit as e:
            if e.code:
                sys.exit(f"{' '.join(map(str, args))} failed:\n{out.getvalue()[-2000:]}")
    return out.getvalue()


def val_bpb(run, data, which):
    line = invoke(train_cli, "eval", "--run", run, "--data", data, "--checkpoint", which, "--json", "--device", "cpu")
    return json.loads(line.splitlines()[-1])["bpb"]


def train_arms(seed, parts, base, root, prepare, first_night):
    """Train every arm of ARMS for one seed, night by night (`prepare`: build's options); the rows of its final
    models' scores."""
    src, data = os.path.join(root, "src"), os.path.join(root, "data")
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    fit = [*MODEL, *COMMON, "--seed", seed]
    a, b, c = (os.path.join(root, f"{arm}{seed}") for arm in "abc")
    for night, part in enumerate(parts, 1):
        for f in part:  # night n adds its modules to the corpus; prepare publishes a new generation
            copy = os.path.join(src, os.path.relpath(f, base))
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copyfile(f, copy)
        invoke(prepare_cli, "build", src, "--out", data, *prepare)
        if "a" in ARMS and night == 1:
            invoke(train_cli, "fit", "--data", data, "--out", a, "--schedule", "open", "--follow-data",
                   "--session-steps", STEPS, *REPLAY, *fit)
        elif "a" in ARMS:
            out = invoke(train_cli, "fit", "--out", a, "--resume", "--follow-data", "--session-steps", STEPS)
            drawn = next((line for line in out.splitlines() if line.startswith("new documents")), "")
            print(f"seed {seed} night {night}: " + drawn, flush=True)
        if "a" in ARMS:
            invoke(train_cli, "cooldown", a, "--steps", LAST_COOLDOWN if night == NIGHTS else COOLDOWN)
        if "b" in ARMS:
            shutil.rmtree(b, ignore_errors=True)
            invoke(train_cli, "fit", "--data", data, "--out", b, "--max-steps", STEPS + COOLDOWN, *fit)
    total = NIGHTS * (STEPS + COOLDOWN)
    if "c" in ARMS:
        invoke(train_cli, "fit", "--data", data, "--out", c, "--max-steps", total, *fit)
    final_model = {"a": NIGHTS * STEPS + LAST_COOLDOWN, "b": STEPS + COOLDOWN, "c": total}
    rows = []
    for arm, run, which, steps in (("a", a, "cooled", total - COOLDOWN + LAST_COOLDOWN), ("b", b, "latest", total),
                                   ("c", c, "latest", total)):
        if arm in ARMS:
            rows.append({"seed": seed, "arm": arm, "val_bpb": val_bpb(run, data, which),
                         "first_night_bpb": val_bpb(run, first_night, which), "steps": steps,
                         "steps_of_final_model": final_model[arm]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def print_table(rows):
    print("\n| arm | val bpb (final corpus) | bpb on night 1's val docs | steps trained in all (final model's) |\n"
          "|---|---|---|---|")
    names = {"a": "(a) continual + nightly cool-down", "b": "(b) fresh run each night",
             "c": "(c) one fresh run on the final corpus"}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        mean = lambda k: sum(r[k] for r in mine) / len(mine)  # noqa: E731
        each = lambda k: " / ".join(f"{r[k]:.4f}" for r in mine)  # noqa: E731
        print(f"| {names[arm]} | {mean('val_bpb'):.4f} ({each('val_bpb')}) | {mean('first_night_bpb'):.4f} "
              f"({each('first_night_bpb')}) | {mine[0]['steps']:,} ({mine[0]['steps_of_final_model']:,}) |")


def main():
    root = tempfile.mkdtemp(prefix="gptmill-continual-")
    files = stdlib_files()[::EVERY]
    parts = [files[i * len(files) // NIGHTS : (i + 1) * len(files) // NIGHTS] for i in range(NIGHTS)]
    first_night, tokenizer = os.path.join(root, "first"), os.path.join(root, "tokenizer")
    invoke(prepare_cli, "tokenizer", *files, "--vocab-size", 4096, "--out", tokenizer)
    prepare = ["--encoding", tokenizer, "--val-fraction", 0.1]
    invoke(prepare_cli, "build", *parts[0], "--out", first_night, *prepare)  # the first night's val documents, alone
    print(f"{len(files)} modules in {NIGHTS} nights of {[len(p) for p in parts]}, {STEPS} steps a night (+{COOLDOWN} "
          f"of cool-down), seeds {SEEDS}; model {' '.join(MODEL)}; in {root}", flush=True)
    start = time.perf_counter()
    base = os.path.commonpath(files)
    rows = [row for seed in SEEDS for row in train_arms(seed, parts, base, root, prepare, first_night)]
    print(f"{time.perf_counter() - start:.0f} s in all")
    print_table(rows)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
