"""Downstream scoring: HellaSwag and CORE read from files in their published formats (written here, no
network), scored as llm.c and nanochat score them, checked against a direct computation, against
lm-evaluation-harness and transformers on an export, and during training (resume logs the same figures)."""

import csv
import json
import os
import random
import re
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REPO, small_gpt2_run, write
from prepare.sources import stdlib_files
from prepare.tokenizer import load_encoding
from train import checkpoint
from train.cli import cli
from prepare.evals import load_suites
from prepare.evals.task import Item, Task, shuffled
from train.models.llama import Llama
from train.models.llama_family import LlamaConfig
from train.scoring import option_scores, score_tasks

CONTEXT = 48  # short enough that a few items are cropped from the left, as lm-eval crops them


def run_cli(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


def code_lines(first, count):
    lines = []
    for path in stdlib_files()[first : first + count]:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines += [line.strip() for line in f if 15 < len(line.strip()) < 60]
    return lines


def write_task_files(cache):
    """HellaSwag's val JSONL and an eval bundle with one CORE task of each kind, in the published formats, made
    of consecutive lines of CPython's sources: the right option is the line that follows."""
    rng, lines = random.Random(0), code_lines(400, 20)
    pick = lambda: rng.randrange(len(lines) - 1)  # noqa: E731
    with open(write(cache / "hellaswag" / "hellaswag_val.jsonl", ""), "w") as f:
        for ind in range(16):
            k = pick()
            endings = [lines[k + 1], *rng.sample(lines, 3)]
            rng.shuffle(endings)
            f.write(json.dumps({"ind": ind, "activity_label": "Code", "ctx_a": lines[k], "ctx_b": "", "ctx": lines[k], "split": "val",
                                "split_type": "indomain", "label": endings.index(lines[k + 1]), "endings": endings,
                                "source_id": f"stdlib~{k}"}) + "\n")
    bundle = cache / "eval_bundle"
    rows = {"mc_code": [], "schema_code": [], "lm_code": []}
    for _ in range(12):
        k = pick()
        choices = [lines[k + 1], *rng.sample(lines, 2)]
        rng.shuffle(choices)
        rows["mc_code"].append({"query": lines[k], "choices": choices, "gold": choices.index(lines[k + 1])})
        options = [lines[k], rng.choice(lines)]
        rows["schema_code"].append({"context_options": options, "continuation": lines[k + 1], "gold": 0})
        rows["lm_code"].append({"context": lines[k] + "  ", "continuation": lines[k + 1]})
    for name, items in rows.items():
        write(bundle / "eval_data" / "code" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    write(bundle / "core.yaml", "icl_tasks:\n"
          "- label: mc_code\n  dataset_uri: code/mc_code.jsonl\n  num_fewshot: [2]\n  icl_task_type: multiple_choice\n"
          "  continuation_delimiter: \"\\nAnswer: \"\n"
          "- label: schema_code\n  dataset_uri: code/schema_code.jsonl\n  num_fewshot: [1]\n  icl_task_type: schema\n"
          "- label: lm_code\n  dataset_uri: code/lm_code.jsonl\n  num_fewshot: [0]\n  icl_task_type: language_modeling\n"
          "  continuation_delimiter: \"\\n\"\n")
    with open(bundle / "eval_meta_data.csv", "w", newline="") as f:
        table = csv.writer(f)
        table.writerow(["Eval Task", "Task Category", "Task Type", "#shots", "#datapoints", "Random baseline", "Centered Metric?", "Description"])
        for name, baseline in (("mc_code", 100 / 3), ("schema_code", 50), ("lm_code", 0)):
            table.writerow([name, "code", "fixture", 0, 12, baseline, "", "made by the tests"])
    return cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_task_files(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def use_cache(cache, monkeypatch):
    monkeypatch.setenv("GPTMILL_CACHE", str(cache))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small GPT-2 trained on CPython sources: (run dir, data dir)."""
    return small_gpt2_run(tmp_path_factory.mktemp("scoring"), stdlib_files()[400:430])


@pytest.fixture(scope="module")
def model(trained):
    return checkpoint.load_model(trained[0], "latest", torch.device("cpu"))[0]


def tasks(names="hellaswag,core", max_per_task=None):
    return load_suites(names.split(","), load_encoding("gpt2"), max_per_task)


def direct_scores(model, item):
    """Each option's (summed log-probability, greedy) from the model's full logits over the vocabulary."""
    scores = []
    for sequence, (start, end) in zip(item.sequences, item.spans):
        with torch.no_grad():
            logits, _ = model(torch.tensor([sequence[:-1]]))
        logprobs = torch.log_softmax(logits[0, :, : model.config.vocab_size].double(), dim=-1)[start - 1 : end - 1]
        targets = torch.tensor(sequence[start:end])
        scores.append((logprobs.gather(1, targets[:, None]).sum().item(), bool((logprobs.argmax(-1) == targets).all())))
    return scores


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_option_scores_equal_a_direct_computation_whatever_the_batch(model, family):
    if family == "llama":
        torch.manual_seed(0)
        model = Llama(LlamaConfig(vocab_size=50257, context=256, n_layer=2, n_head=2, n_embd=32)).eval()
    fitting = [Task(t.name, t.kind, [i for i in t.items if max(map(len, i.sequences)) <= model.config.context + 1])
               for t in tasks()]
    assert sum(len(t.items) for t in fitting) >= 20
    expected = {(t, i): direct_scores(model, item) for t, task in enumerate(fitting) for i, item in enumerate(task.items)}
    for batch_size in (1, 7):
        scored = option_scores(model, fitting, batch_size, torch.device("cpu"), "fp32")
        assert scored.keys() == expected.keys()
        for key, options in scored.items():
            assert [o.logprob for o in options] == pytest.approx([e[0] for e in expected[key]], abs=1e-4)
            assert [o.greedy for o in options] == [e[1] for e in expected[key]]
            assert [o.tokens for o in options] == [end - start for start, end in tasks_items(fitting, key).spans]


def tasks_items(tasks, key):
    return tasks[key[0]].items[key[1]]


def test_accuracy_rules_of_each_kind(model):
    """HellaSwag: acc by the summed log-probability, acc_norm per token; CORE's multiple choice and schema per
    token; a language-modelling item is right only when greedy decoding gives its continuation."""
    encoding = load_encoding("gpt2")
    prompt = [encoding.eot_token] + encoding.encode_ordinary("def main(self):")
    sequence = list(prompt)
    for _ in range(6):  # the model's own greedy continuation
        with torch.no_grad():
            logits, _ = model(torch.tensor([sequence]))
        sequence.append(int(logits[0, -1, :50257].argmax()))
    wrong = sequence[:-1] + [(sequence[-1] + 1) % 50257]
    lm = Task("lm", "language_modeling", [Item([sequence], [(len(prompt), len(sequence))]), Item([wrong], [(len(prompt), len(wrong))])])
    assert [s.acc for s in score_tasks(model, [lm], 4, torch.device("cpu"), "fp32")] == [0.5]

    loaded = tasks()
    scores = {s.name: s for s in score_tasks(model, loaded, 8, torch.device("cpu"), "fp32")}
    options = option_scores(model, loaded, 8, torch.device("cpu"), "fp32")
    for t, task in enumerate(loaded):
        items = [(options[(t, i)], item.gold) for i, item in enumerate(task.items)]
        argmax = lambda values: values.index(max(values))  # noqa: E731
        by_sum = sum(argmax([o.logprob for o in opts]) == gold for opts, gold in items) / len(items)
        by_mean = sum(argmax([o.logprob / o.tokens for o in opts]) == gold for opts, gold in items) / len(items)
        greedy = sum(opts[0].greedy for opts, _ in items) / len(items)
        score = scores[task.name]
        if task.kind == "hellaswag":
            assert (score.acc, score.acc_norm) == (by_sum, by_mean)
        else:
            assert score.acc == (greedy if task.kind == "language_modeling" else by_mean)
            assert score.centered == pytest.approx((score.acc - task.baseline) / (1 - task.baseline))
    assert [scores[n].baseline for n in ("mc_code", "schema_code", "lm_code")] == pytest.approx([1 / 3, 0.5, 0.0])


def test_score_command_prints_each_task_and_core(trained):
    run, data = trained
    result = run_cli("score", run, "--json", "--device", "cpu")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # Its dataset was built without --decontaminate: the user is told, on stderr.
    assert result.stderr == (f"note: the run's dataset {data} was not decontaminated against hellaswag, core (prepare build "
                             f"--decontaminate hellaswag,core): its scores may count items the model trained on\n")
    assert [line["task"] for line in lines] == ["hellaswag", "mc_code", "schema_code", "lm_code", "core"]
    assert lines[0]["items"] == 16 and set(lines[0]) == {"task", "kind", "items", "acc", "acc_norm"}
    assert lines[-1]["core"] == pytest.approx(sum(line["centered"] for line in lines[1:4]) / 3)
    text = run_cli("score", run, "--tasks", "hellaswag", "--device", "cpu").stdout
    assert text == f"hellaswag: acc {lines[0]['acc']:.4f}, acc_norm {lines[0]['acc_norm']:.4f} (16 items)\n"


def test_max_per_task_is_the_first_items_of_one_fixed_order(cache):
    full, cut = tasks("hellaswag"), tasks("hellaswag", max_per_task=5)
    assert [i.sequences for i in cut[0].items] == [i.sequences for i in full[0].items[:5]]
    rows = [json.loads(line) for line in open(cache / "hellaswag" / "hellaswag_val.jsonl")]
    encoding = load_encoding("gpt2")
    assert [i.gold for i in full[0].items] == [r["label"] for r in shuffled(rows, None)]
    assert full[0].items[0].sequences[0][: 1 + len(encoding.encode_ordinary(shuffled(rows, None)[0]["ctx"]))] == (
        [encoding.eot_token] + encoding.encode_ordinary(shuffled(rows, None)[0]["ctx"]))
    few = {t.name: t for t in tasks("core", max_per_task=2)}  # fewer items than shots: every other item is shown
    assert len(few["mc_code"].items) == 2


def test_scores_equal_lm_evaluation_harness_and_transformers_on_the_export(trained, model, cache, tmp_path):
    """lm-eval scores our export through transformers on the same HellaSwag file, with the context as we give
    it (end-of-text, then the context) and the endings after a space: acc and every option's log-likelihood
    agree. lm-eval's acc_norm divides by the ending's characters, ours by its tokens (llm.c's), so its acc_norm
    is compared with ours recomputed per character."""
    lm_eval = pytest.importorskip("lm_eval")
    transformers = pytest.importorskip("transformers")
    from lm_eval.tasks import TaskManager

    run, _ = trained
    run_cli("export", run, tmp_path / "hf", "--checkpoint", "latest")
    write(tmp_path / "tasks" / "fixture.yaml", f"""task: gptmill_hellaswag_fixture
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {cache / 'hellaswag' / 'hellaswag_val.jsonl'}
validation_split: validation
output_type: multiple_choice
doc_to_text: "<|endoftext|>{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    result = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'hf'},dtype=float32", tasks=["gptmill_hellaswag_fixture"],
                                     task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
                                     device="cpu", batch_size=8, log_samples=True, verbosity="ERROR")
    theirs = {s["doc"]["ind"]: [r[0][0] for r in s["resps"]] for s in result["samples"]["gptmill_hellaswag_fixture"]}
    figures = result["results"]["gptmill_hellaswag_fixture"]

    hellaswag = tasks("hellaswag")
    ours = option_scores(model, hellaswag, 8, torch.device("cpu"), "fp32")
    rows = shuffled([json.loads(line) for line in open(cache / "hellaswag" / "hellaswag_val.jsonl")], None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    by_chars = 0
    for (_, i), options in ours.items():
        assert [o.logprob for o in options] == pytest.approx(theirs[rows[i]["ind"]], abs=1e-4)
        per_char = [o.logprob / len(ending) for o, ending in zip(options, rows[i]["endings"])]
        by_chars += per_char.index(max(per_char)) == rows[i]["label"]
        item = hellaswag[0].items[i]
        for option, sequence, (start, end) in zip(options, item.sequences, item.spans):
            if len(sequence) <= CONTEXT + 1:  # transformers' GPT-2 reads at most its n_positions
                with torch.no_grad():
                    logprobs = torch.log_softmax(hf(torch.tensor([sequence[:-1]])).logits[0].double(), dim=-1)
                direct = logprobs[start - 1 : end - 1].gather(1, torch.tensor(sequence[start:end])[:, None]).sum().item()
                assert option.logprob == pytest.approx(direct, abs=1e-4)
    score = score_tasks(model, hellaswag, 8, torch.device("cpu"), "fp32")[0]
    assert score.acc == figures["acc,none"] and by_chars / score.items == figures["acc_norm,none"]


def test_a_hugging_face_model_scores_as_the_run_it_was_exported_from(trained, tmp_path, monkeypatch):
    """A Hugging Face directory, and a Hub id (the download replaced by the exported directory: the same code
    after it)."""
    run, _ = trained
    run_cli("export", run, tmp_path / "hf", "--checkpoint", "latest")
    expected = run_cli("score", run, "--checkpoint", "latest", "--device", "cpu").stdout  # the scores (a note on the run's datasets goes to stderr)
    assert run_cli("score", tmp_path / "hf", "--device", "cpu").stdout == expected
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: asked.append(repo) or str(tmp_path / "hf"))
    assert run_cli("score", "hf:someone/tiny-gpt2", "--device", "cpu").stdout == expected
    assert run_cli("score", "someone/tiny-gpt2", "--device", "cpu").stdout == expected
    assert asked == ["someone/tiny-gpt2"] * 2
    _, data = trained  # fit --init-from takes the same ids: the run starts from the exported weights
    run_cli("fit", "--data", data, "--out", tmp_path / "cont", "--init-from", "hf:someone/tiny-gpt2", "--max-steps", 1, "--lr", 1e-12,
            "--min-lr", 0, "--weight-decay", 0, "--no-compile", "--device", "cpu", "--dtype", "fp32", "--no-samples", "--batch-size", 2)
    assert json.load(open(tmp_path / "cont" / "config.json"))["init_from"] == "hf:someone/tiny-gpt2" and len(asked) == 4
    assert run_cli("score", tmp_path / "cont", "--device", "cpu").stdout == expected


def test_downstream_figures_during_training_survive_a_resume(dataset, tmp_path):
    from test_train import killed_and_resumed

    data = dataset  # the tasks are encoded with the run's own tokenizer, here a 512-id one
    args = ["--data", data, "--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, "--batch-size", 4,
            "--no-compile", "--device", "cpu", "--no-samples", "--max-steps", 24, "--ckpt-every", 4, "--eval-every", 8,
            "--eval-tasks", "hellaswag,core", "--eval-tasks-every", 6, "--eval-tasks-max", 6]
    whole, resumed = killed_and_resumed(tmp_path, args, 24, kill_after=11, resume_args=["--data", data])
    keys = ["hellaswag/acc", "hellaswag/acc_norm", "core", "core/mc_code", "core/schema_code", "core/lm_code"]
    scored = [m["step"] for m in whole if "core" in m]
    assert scored == [6, 12, 18, 23] and all(k in whole[s] for s in scored for k in keys)
    for a, b in zip(whole, resumed):
        assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}, a["step"]


def test_max_time_counts_the_task_scoring(dataset, tmp_path):
    result = run_cli("fit", "--data", dataset, "--out", tmp_path / "run", "--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32,
                     "--context", 32, "--no-compile", "--device", "cpu", "--no-samples", "--max-time", "3s", "--eval-tasks", "hellaswag")
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert len(config["timing"]) == 4 and config["timing"][3] > 0
    assert f"{config['timing'][3]:.2f} s per task scoring" in result.output


@pytest.fixture(scope="module")
def briefly_trained(tmp_path_factory):
    """The same small GPT-2 after 2 steps, for the serial phase (40 steps over GPT-2's vocabulary took 20 s there)."""
    return small_gpt2_run(tmp_path_factory.mktemp("scoring-2"), stdlib_files()[400:430], "--max-steps", 2)


@pytest.mark.serial
def test_torchrun_shares_the_items_and_sums_the_counts(briefly_trained, cache):
    run, _ = briefly_trained
    single = run_cli("score", run, "--json", "--device", "cpu").stdout
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "GPTMILL_CACHE": str(cache)}
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "train", "score",
                          str(run), "--json", "--device", "cpu"], cwd=REPO, env={k: str(v) for k, v in env.items()},
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-2000:]
    assert job.stdout == single


@pytest.mark.parametrize("args,message", [
    (["RUN", "--tasks", "mmlu"], "--tasks 'mmlu': choose among hellaswag, core (comma-separated)"),
    (["RUN", "--tasks", ","], "--tasks ',': choose among hellaswag, core (comma-separated)"),
    (["RUN", "--checkpoint", "best"], "RUN: no checkpoint yet"),
])
def test_bad_options(tmp_path, args, message):
    os.makedirs(tmp_path / "run")
    result = run_cli("score", *[str(tmp_path / "run") if a == "RUN" else a for a in args], ok=False)
    assert result.output.strip().splitlines() == [f"error: {message.replace('RUN', str(tmp_path / 'run'))}"]


def test_neither_a_directory_nor_a_hub_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("score", tmp_path / "no-such-run", ok=False)
    assert result.output.startswith(f"error: {tmp_path / 'no-such-run'}: no such directory, and the Hugging Face Hub did not give model")
    assert len(result.output.splitlines()) == 1


def test_offline_and_not_cached_names_the_url_and_the_path(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMILL_CACHE", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    for suite, url, path in (("hellaswag", "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
                              tmp_path / "empty" / "hellaswag" / "hellaswag_val.jsonl"),
                             ("core", "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip", tmp_path / "empty" / "eval_bundle.zip")):
        result = run_cli("score", trained[0], "--tasks", suite, ok=False)
        assert result.output == f"error: cannot download {url} (Name or service not known); without a network, download it elsewhere and put it at {path}\n"
        assert not [n for _, _, names in os.walk(tmp_path / "empty") for n in names]  # no partial file left behind
    result = run_cli("fit", "--data", trained[1], "--out", tmp_path / "run", "--max-steps", 1, "--eval-tasks", "core", ok=False)
    assert result.output.startswith("error: --eval-tasks: cannot download") and not (tmp_path / "run").exists()


def test_malformed_task_files_are_named(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMILL_CACHE", str(tmp_path))
    good = json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 1})
    for text, message in ((good + "\n{oops\n", "hellaswag_val.jsonl:2: not JSON"),
                          (good + "\n" + json.dumps({"ctx": "a", "endings": ["b"]}) + "\n", "hellaswag_val.jsonl:2: no 'label' of type int"),
                          (json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 2}) + "\n", "has label 2 for 2 endings")):
        write(tmp_path / "hellaswag" / "hellaswag_val.jsonl", text)
        result = run_cli("score", trained[0], "--tasks", "hellaswag", ok=False)
        assert len(result.output.splitlines()) == 1 and message in result.output, result.output
    write(tmp_path / "eval_bundle" / "core.yaml", "icl_tasks:\n- label: x\n  dataset_uri: x.jsonl\n  icl_task_type: generation\n")
    write(tmp_path / "eval_bundle" / "eval_meta_data.csv", "Eval Task,Random baseline\nx,0\n")
    result = run_cli("score", trained[0], "--tasks", "core", ok=False)
    assert "task 'x' of type 'generation'" in result.output and len(result.output.splitlines()) == 1


def test_a_model_without_gpt2_vocabulary_is_refused_from_a_directory(trained, tmp_path):
    run, _ = trained
    run_cli("export", run, tmp_path / "hf")
    write(tmp_path / "hf" / "vocab.json", json.dumps({"a": 0}))
    result = run_cli("score", tmp_path / "hf", ok=False)
    assert result.output.startswith(f"error: {tmp_path / 'hf'}: its vocab.json is not GPT-2's")


def test_a_language_modelling_item_whose_context_merges_into_its_continuation():
    """A tokenizer may join the context's last characters with the delimiter after them (cl100k's pattern joins
    "):" and "\\n"): scoring then starts at the merged token, the first that differs from the context's own."""
    from prepare.evals.core import core_item

    class Merging:  # one token per character, but "):\n" is one token
        eot_token = 0
        _pat_str = r"\):\n|."  # a split no faster encoder knows: prepare.tokenizer's encode calls the one below

        def encode_ordinary(self, text):
            return [1000 if part == "):\n" else ord(part) for part in re.findall(r"\):\n|.", text, re.S)]

        def encode_to_numpy(self, text, **_):  # what prepare.tokenizer's encode calls
            return np.array(self.encode_ordinary(text))

    item = core_item("language_modeling", [{"context": "f(x):", "continuation": "  y"}], 0, 0, "\n", Merging(), "lm")
    assert item.sequences == [[0, ord("f"), ord("("), ord("x"), 1000, ord(" "), ord(" "), ord("y")]]
    assert item.spans == [(4, 8)]  # the context alone is end-of-text f ( x ) : -- its ")" is where they part
