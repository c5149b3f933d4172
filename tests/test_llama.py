"""The Llama-style model and Muon: shapes, causality, cached decoding, RoPE, one Muon step against a reference,
exact resume, and the Hugging Face round trip (LlamaForCausalLM, Qwen3ForCausalLM)."""

import json
import math

import pytest
import torch

from test_generate import PROMPT, run_cli
from test_train import RUN_OPTIONS, killed_and_resumed
from train import checkpoint
from train.generate import sample
from train.models.llama import Llama, rope_tables, rotate
from train.models.llama_family import LlamaConfig
from train.optim import EMBEDDING_LR_SCALE, Muon, orthogonalize, param_groups

SHAPE = dict(vocab_size=50257, context=48, n_layer=2, n_head=2, n_embd=64)
LLAMA = ["--model", "tiny-llama", "--n-head", 2, "--n-embd", 32, "--context", 32, *RUN_OPTIONS]


def model(**changes):
    torch.manual_seed(0)
    return Llama(LlamaConfig(**{**SHAPE, **changes})).eval()


@pytest.mark.parametrize("mlp, tied", [("swiglu", False), ("relu2", True)])
def test_shapes_and_parameters(mlp, tied):
    m = model(mlp=mlp, tie_embeddings=tied)
    logits, _ = m(torch.tensor([PROMPT]))
    assert logits.shape == (1, len(PROMPT), 50304)  # the vocabulary padded to a multiple of 64
    _, loss = m(torch.tensor([PROMPT[:-1]]), torch.tensor([PROMPT[1:]]))
    assert loss.shape == () and abs(loss.item() - math.log(50304)) < 0.5  # about uniform at initialisation
    hidden = 4 * 64 if mlp == "relu2" else 192  # SwiGLU: 8/3 x 64 rounded up to 32
    per_layer = 4 * 64 * 64 + (2 if mlp == "relu2" else 3) * 64 * hidden + 2 * 64 + 2 * 32
    assert m.num_params() == (1 if tied else 2) * 50304 * 64 + 2 * per_layer + 64
    assert not any(name.endswith("bias") for name, _ in m.named_parameters())


def test_causal_a_later_token_never_changes_an_earlier_logit():
    m = model()
    ids = torch.tensor([PROMPT + [11, 12, 13]])
    changed = ids.clone()
    changed[0, 5:] = torch.tensor([99, 98, 97, 96])
    with torch.no_grad():
        a, b = m(ids)[0], m(changed)[0]
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6) and not torch.allclose(a[:, 5:], b[:, 5:])


def test_rope_scores_depend_only_on_the_distance():
    config = LlamaConfig(**SHAPE)
    cos, sin = rope_tables(config, None)
    q, k = torch.randn(32), torch.randn(32)
    score = lambda m, n: (rotate(q, cos[m], sin[m]) @ rotate(k, cos[n], sin[n])).item()
    assert score(7, 3) == pytest.approx(score(40, 36), abs=1e-4) and score(7, 3) != pytest.approx(score(7, 2), abs=1e-3)
    assert torch.allclose(rotate(q, cos[0], sin[0]), q)  # position 0 is not rotated


def test_cached_decoding_equals_uncached_past_the_context():
    m = model(qk_norm=True)
    with torch.no_grad():  # larger weights than at initialisation, so that greedy decoding is not one token repeated
        for p in m.parameters():
            p.mul_(5)
    cached = list(sample(m, PROMPT, 70, temperature=0, use_cache=True))  # past the context of 48: sliding window
    uncached = list(sample(m, PROMPT, 70, temperature=0, use_cache=False))
    assert cached == uncached and len(set(cached)) > 5


def reference_muon_update(p, grad, buffer, lr, weight_decay, momentum=0.95):
    """Muon as Keller Jordan's reference writes it, one matrix at a time, with Moonlight's RMS matching."""
    buffer.mul_(momentum).add_(grad, alpha=1 - momentum)
    g = grad * (1 - momentum) + buffer * momentum  # Nesterov
    x = g.T if g.size(0) > g.size(1) else g
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    x = x.T if g.size(0) > g.size(1) else x
    return p * (1 - lr * weight_decay) - lr * 0.2 * max(p.shape) ** 0.5 * x


def test_muon_steps_equal_a_reference_written_out():
    ours, ref = model(tie_embeddings=False), model(tie_embeddings=False)
    groups = param_groups(ours, use_muon=True)
    names = {id(p): n for n, p in ours.named_parameters()}
    muon_names = {names[id(p)] for g in groups if g.get("use_muon") for p in g["params"]}
    assert muon_names == {n for n, p in ours.named_parameters() if p.dim() == 2 and not n.startswith(("embed", "lm_head"))}
    optimizer = Muon([{**g, "weight_decay": 0.1 if g["decay"] else 0.0} for g in groups], lr=0.01, betas=(0.9, 0.95))
    ref_params = dict(ref.named_parameters())
    adam = torch.optim.AdamW([
        {"params": [ref_params[n] for n in ("embed_tokens.weight", "lm_head.weight")], "weight_decay": 0.1},
        {"params": [p for n, p in ref_params.items() if p.dim() < 2], "weight_decay": 0.0},
    ], lr=0.01, betas=(0.9, 0.95))
    buffers = {n: torch.zeros_like(ref_params[n]) for n in muon_names}
    ids = torch.tensor([PROMPT * 4])
    for _ in range(2):  # the second step uses the momentum of the first
        for m in (ours, ref):
            m.zero_grad()
            m(ids[:, :-1], ids[:, 1:])[1].backward()
        optimizer.step()
        with torch.no_grad():
            for n in muon_names:
                ref_params[n].copy_(reference_muon_update(ref_params[n], ref_params[n].grad, buffers[n], 0.01, 0.1))
        adam.step()
    for n, p in ours.named_parameters():
        # AdamW's fused and foreach kernels round apart where a gradient is as small as eps (lm_head's rows of
        # tokens not in the prompt): one weight in 3.2M by 1.24e-6 on one thread.
        assert torch.allclose(p, ref_params[n], atol=2e-6, rtol=1e-5), n
    # The update is nearly orthogonal: every singular value in about [0.7, 1.2].
    singular = torch.linalg.svdvals(orthogonalize(torch.randn(1, 64, 192), torch.float32)[0])
    assert singular.min() > 0.5 and singular.max() < 1.3


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in torch 2.9")
def test_muon_equals_torch_optim_muon():
    """torch's own Muon (Keller Jordan's coefficients; "match_rms_adamw" is Moonlight's scaling) is an
    implementation independent of ours: step by step the same updates, to the precision of its bf16
    Newton-Schulz (ours in fp32 here; measured 1.1-1.3% apart, where a wrong scale, momentum or Nesterov
    term is tens of percent)."""
    torch.manual_seed(0)
    start = [torch.randn(64, 192), torch.randn(192, 64), torch.randn(96, 96)]
    ours_params = [p.clone().requires_grad_() for p in start]
    torch_params = [p.clone().requires_grad_() for p in start]
    ours = Muon([dict(params=ours_params, use_muon=True, weight_decay=0.1)], lr=0.02, betas=(0.9, 0.95))
    theirs = torch.optim.Muon(torch_params, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):  # later steps use the momentum of earlier ones
        before = [p.detach().clone() for p in torch_params]
        for a, b in zip(ours_params, torch_params):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        ours.step()
        theirs.step()
        for a, b, p in zip(ours_params, torch_params, before):
            assert ((a - p) - (b - p)).norm() < 0.03 * (b - p).norm()
            a.data.copy_(b)  # each step from the same point


def test_tiny_llama_with_muon_learns_and_resumes_bit_identically(dataset, tmp_path):
    args = ["--data", dataset, *LLAMA, "--max-steps", 40, "--ckpt-every", 10, "--eval-every", 20, "--dropout", 0.1]
    a, b = killed_and_resumed(tmp_path, args, 40, kill_after=19)
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"] and x["grad_norm"] == y["grad_norm"] and x.get("val_loss") == y.get("val_loss"), x["step"]
    config = json.load(open(tmp_path / "whole" / "config.json"))
    assert (config["family"], config["optimizer"], config["bias"]) == ("llama", "muon", False)
    assert a[-1]["train_eval_loss"] < a[0]["loss"] - 1.2  # from ln(512) = 6.23 to 4.77
    state = checkpoint.load(checkpoint.locate(tmp_path / "whole"))[1]
    assert any("momentum_buffer" in s for s in state["optimizer"]["state"].values())
    # Beside Muon the embeddings learn at EMBEDDING_LR_SCALE times the scheduled rate; the norms at it.
    rates = {(g["use_muon"], g["decay"]): g["lr"] for g in state["optimizer"]["param_groups"]}
    assert rates[(False, True)] == pytest.approx(EMBEDDING_LR_SCALE * rates[(True, True)]) and rates[(False, False)] == rates[(True, True)] > 0


def hf_logits(hf_dir, ids):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval()
    with torch.no_grad():
        return hf, hf(ids).logits


def test_export_as_qwen3_and_init_from_it(gpt2_dataset, tmp_path):
    dataset = gpt2_dataset  # compared with Hugging Face's model on GPT-2's ids
    run_cli("fit", "--data", dataset, "--out", tmp_path / "run", *LLAMA, "--max-steps", 20, "--eval-every", 0, "--dtype", "fp32")
    run_cli("export", tmp_path / "run", tmp_path / "hf", "--checkpoint", "latest")
    ours, config = checkpoint.load_model(tmp_path / "run", "latest", torch.device("cpu"))
    ids = torch.tensor([PROMPT * 3])
    hf, theirs = hf_logits(tmp_path / "hf", ids)
    assert type(hf).__name__ == "Qwen3ForCausalLM"  # Llama with per-head QK-norm
    with torch.no_grad():
        assert torch.allclose(ours(ids)[0][..., :50257], theirs, atol=1e-4)
    greedy = list(sample(ours, PROMPT, 20, temperature=0))
    generated = hf.generate(torch.tensor([PROMPT]), max_new_tokens=20, do_sample=False, pad_token_id=50256, eos_token_id=None)
    assert generated[0, len(PROMPT):].tolist() == greedy
    # --init-from the exported directory starts from exactly these weights.
    run_cli("fit", "--data", dataset, "--out", tmp_path / "cont", "--init-from", tmp_path / "hf", *RUN_OPTIONS,
            "--max-steps", 1, "--lr", 1e-12, "--min-lr", 0, "--weight-decay", 0, "--dtype", "fp32")
    continued = json.load(open(tmp_path / "cont" / "config.json"))
    assert (continued["preset"], continued["family"], continued["qk_norm"], continued["n_embd"]) == ("tiny-llama", "llama", True, 32)
    from train.hf import load_hf_weights

    fresh = Llama(ours.config)
    load_hf_weights(fresh, tmp_path / "hf")
    for name, tensor in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[name][:50257], tensor[:50257]), name


def test_a_llama_checkpoint_from_transformers_trains_and_exports_as_llama(gpt2_dataset, tmp_path):
    dataset = gpt2_dataset  # a Hugging Face Llama of GPT-2's vocabulary
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=48,
                                         rms_norm_eps=1e-6, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(hf_config).save_pretrained(tmp_path / "small-llama")
    run_cli("fit", "--data", dataset, "--out", tmp_path / "run", "--init-from", tmp_path / "small-llama", *RUN_OPTIONS,
            "--max-steps", 3, "--dtype", "fp32")
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert (config["qk_norm"], config["tie_embeddings"], config["n_layer"], config["context"]) == (False, True, 2, 48)
    run_cli("export", tmp_path / "run", tmp_path / "hf", "--checkpoint", "latest")
    ours, _ = checkpoint.load_model(tmp_path / "run", "latest", torch.device("cpu"))
    ids = torch.tensor([PROMPT * 3])
    hf, theirs = hf_logits(tmp_path / "hf", ids)
    assert type(hf).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        assert torch.allclose(ours(ids)[0][..., :50257], theirs, atol=1e-4)
    # What our model cannot hold is refused by name.
    gqa = transformers.LlamaConfig(**{**hf_config.to_dict(), "num_key_value_heads": 1})
    transformers.LlamaForCausalLM(gqa).save_pretrained(tmp_path / "gqa")
    result = run_cli("fit", "--data", dataset, "--out", tmp_path / "x", "--init-from", tmp_path / "gqa", "--max-steps", 1, ok=False)
    assert "grouped-query attention" in result.output and "Traceback" not in result.output


def test_relu2_runs_are_refused_by_export(dataset, tmp_path):
    from train.config import DataSource, RunConfig
    from train.hf import export
    from train.checkpoint import CheckpointError

    config = RunConfig(data=[DataSource(str(dataset))], out="o", preset="tiny-llama", family="llama", mlp="relu2",
                       qk_norm=True, tie_embeddings=False, n_layer=2, n_head=2, n_embd=64, context=48, batch_size=1,
                       tokens_per_step=48, lr=1e-3, min_lr=1e-4, tokenizer={"name": "gpt2", "vocab_size": 50257, "eot_token": 50256})
    with pytest.raises(CheckpointError, match="SwiGLU"):
        export(model(mlp="relu2"), config, tmp_path / "hf", None)


def test_biases_are_refused_for_llama_style_models(dataset, tmp_path):
    result = run_cli("fit", "--data", dataset, "--out", tmp_path / "run", *LLAMA, "--bias", "--max-steps", 1, ok=False)
    assert "has no biases" in result.output and not (tmp_path / "run").exists()


def test_no_qk_norm_exports_as_llama(dataset, tmp_path):
    run_cli("fit", "--data", dataset, "--out", tmp_path / "run", *LLAMA, "--no-qk-norm", "--max-steps", 2, "--eval-every", 0)
    run_cli("export", tmp_path / "run", tmp_path / "hf", "--checkpoint", "latest")
    hf_config = json.load(open(tmp_path / "hf" / "config.json"))
    assert (hf_config["architectures"], hf_config["model_type"]) == (["LlamaForCausalLM"], "llama")
    result = run_cli("fit", "--data", dataset, "--out", tmp_path / "run", "--resume", "--qk-norm", "--max-steps", 3, ok=False)
    assert "--resume cannot change --qk-norm" in result.output
