"""The training loop: build the model, then step, evaluate, checkpoint and log until the budget is spent.

Every step is a pure function of (seed, step) and the state saved in a checkpoint, which is what makes a
resumed run log the same losses as an uninterrupted one.
"""

import concurrent.futures
import json
import math
import os
import signal
import sys
import time

import torch
from tqdm import tqdm

from prepare.tokenizer import load_encoding
from train import checkpoint
from train.data import eval_windows, open_dataset, step_windows, to_device, train_fingerprint
from train.device import autocast, peak_flops, pick_device, pick_dtype
from train.evaluate import split_loss
from train.generate import sample
from train.model import GPT, GPTConfig
from train.plot import plot_run
from train.tracking import open_trackers

SAMPLE_PROMPTS = ("", "The")  # "" starts a fresh document after the end-of-text token
CALIBRATION_STEPS = 5  # steps timed before a --max-time budget is turned into a step count


class TrainingError(Exception):
    pass


def time_step(model, split, cfg, device):
    """Seconds per optimizer step, timed on forward/backward passes that change nothing: a --max-time
    budget becomes a step count before step 0, so the schedule (and a resume) never depends on the clock."""
    rng_state = torch.get_rng_state()
    windows = eval_windows(split, cfg["batch_size"])
    x, y = to_device(windows, device)
    times = []
    for _ in range(CALIBRATION_STEPS + 1):  # the first pass carries compilation and warm-up
        t0 = time.perf_counter()
        with autocast(device, cfg["dtype"]):
            _, loss = model(x, y)
        loss.backward()
        loss.item()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng_state)
    return sorted(times[1:])[len(times) // 2 - 1] * cfg["grad_accum"]


def lr_at(step, cfg):
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at the last step."""
    if step < cfg["warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    progress = (step - cfg["warmup_steps"]) / max(1, cfg["max_steps"] - cfg["warmup_steps"])
    return cfg["min_lr"] + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg["lr"] - cfg["min_lr"])


def make_optimizer(model, cfg, device):
    """AdamW, decaying only matrices (not biases, LayerNorms), fused where this torch offers it."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), fused=fused)


def write_samples(model, encoding, cfg, step, run_dir, say):
    """A few continuations of fixed prompts, from a generator of their own so training RNG is untouched."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg["seed"])
    model.eval()
    lines = []
    for prompt in SAMPLE_PROMPTS:
        ids = [encoding.eot_token] + encoding.encode_ordinary(prompt)
        with autocast(next(model.parameters()).device, cfg["dtype"]):
            new = list(sample(model, ids, 48, temperature=0.8, top_k=50, generator=generator, eot=encoding.eot_token))
        text = prompt + encoding.decode([t for t in new if t < encoding.n_vocab and t != encoding.eot_token])
        lines.append(f"[step {step}] {text!r}")
    model.train()
    with open(os.path.join(run_dir, "samples.txt"), "a") as f:
        f.write("\n".join(lines) + "\n")
    for line in lines:
        say(line)


def truncate_metrics(path, last_step):
    """Drop metric lines past the checkpoint a run resumes from, so the log reads as one run."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if json.loads(line)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(kept)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def fit(cfg, resume=False, allow_data_change=False, say=print):
    """Train as `cfg` says; returns the final metrics. cfg is the resolved option dict (config.json)."""
    run_dir = cfg["out"]
    device = pick_device(cfg["device"])
    cfg["dtype"] = pick_dtype(cfg["dtype"], device)
    torch.manual_seed(cfg["seed"])
    manifest, splits = open_dataset(cfg["data"], cfg["context"])
    encoding = load_encoding(manifest["tokenizer"]["name"])
    cfg["tokenizer"] = manifest["tokenizer"]  # what sample, eval and export need to read the model back
    model_cfg = GPTConfig(
        vocab_size=manifest["tokenizer"]["vocab_size"], context=cfg["context"], n_layer=cfg["n_layer"],
        n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"], bias=cfg["bias"],
    )
    model = GPT(model_cfg)
    if cfg.get("init_from"):
        from train.hf import load_hf_weights

        load_hf_weights(model, cfg["init_from"])
    model.to(device)
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type) if cfg["dtype"] == "fp16" else None
    fingerprint = train_fingerprint(manifest)
    micro_batches = cfg["grad_accum"]
    tokens_per_step = cfg["batch_size"] * cfg["context"] * micro_batches

    start_step, elapsed = 0, 0.0
    if resume:
        folder = checkpoint.locate(run_dir)
        weights, state = checkpoint.load(folder)
        if state["data_fingerprint"] != fingerprint and not allow_data_change:
            raise TrainingError(f"{cfg['data']}: the train shards changed since this run started; pass --allow-data-change to resume anyway")
        checkpoint.load_weights(model, weights, folder)
        optimizer.load_state_dict(state["optimizer"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        start_step, elapsed = state["step"] + 1, state["elapsed"]
        truncate_metrics(os.path.join(run_dir, "metrics.jsonl"), state["step"])
        say(f"resuming {run_dir} from {os.path.basename(folder)}")
    os.makedirs(run_dir, exist_ok=True)

    train_model = torch.compile(model) if cfg["compile"] else model
    if not resume:
        if cfg["max_time"]:
            calibration_start = time.perf_counter()
            seconds = time_step(train_model, splits["train"], cfg, device)
            elapsed = time.perf_counter() - calibration_start  # calibration counts against the budget
            cfg["max_steps"] = min(cfg["max_steps"] or sys.maxsize, max(1, int((cfg["max_time"] - elapsed) / seconds)))
        if cfg["warmup_steps"] is None:
            cfg["warmup_steps"] = max(1, min(100, cfg["max_steps"] // 20))
    with open(os.path.join(run_dir, "config.json"), "w") as f:  # the resolved budget, which a resume reuses
        json.dump(cfg, f, indent=1)
    if not splits["val"].windows:
        say(f"warning: the val split of {cfg['data']} is shorter than the context; only train loss is evaluated")
    flops_per_token = model.flops_per_token()
    peak = peak_flops(device, cfg["dtype"])
    say(
        f"{model.num_params() / 1e6:.2f}M parameters, {tokens_per_step:,} tokens per step "
        f"({cfg['batch_size']} x {cfg['context']} x {micro_batches}), {device.type} {cfg['dtype']}"
        f"{', compiled' if cfg['compile'] else ''}"
    )

    def save(step, val_loss):
        state = {
            "step": step, "elapsed": elapsed, "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler else {}, "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "config": {k: v for k, v in cfg.items() if v is None or isinstance(v, (int, float, str, bool))},
            "data_fingerprint": fingerprint,
        }
        checkpoint.save(run_dir, model, state, val_loss)

    def evaluate(split):
        return split_loss(train_model, splits[split], cfg["eval_windows"], cfg["batch_size"], device, cfg["dtype"])[0]

    def eval_and_log(step, log):
        log["train_eval_loss"] = evaluate("train")
        if splits["val"].windows:
            log["val_loss"] = evaluate("val")
            log["val_perplexity"] = math.exp(min(log["val_loss"], 50))
        say(f"step {step}: train {log['train_eval_loss']:.4f}" + (f", val {log['val_loss']:.4f}" if "val_loss" in log else ""))
        if cfg["samples"]:
            write_samples(model, encoding, cfg, step, run_dir, say)

    trackers = open_trackers(cfg, run_dir)
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a")
    prefetch = concurrent.futures.ThreadPoolExecutor(1)  # the next step's windows are read while this one runs
    next_windows = lambda s: prefetch.submit(step_windows, splits["train"], cfg["seed"], s, 0, cfg["batch_size"] * micro_batches)
    pending = next_windows(start_step)
    bar = tqdm(total=cfg["max_steps"], initial=start_step, disable=not sys.stderr.isatty(), dynamic_ncols=True, unit="step")
    log, step, data_wait, elapsed_before = {}, start_step, 0.0, elapsed
    with StopRequest() as stop:
        for step in range(start_step, cfg["max_steps"]):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            windows = pending.result()
            data_wait = time.perf_counter() - t0
            pending = next_windows(step + 1)
            loss_sum = torch.zeros((), device=device)
            for micro in range(micro_batches):
                x, y = to_device(windows[micro * cfg["batch_size"] : (micro + 1) * cfg["batch_size"]], device)
                with autocast(device, cfg["dtype"]):
                    _, loss = train_model(x, y)
                loss = loss / micro_batches
                (scaler.scale(loss) if scaler else loss).backward()
                loss_sum += loss.detach()
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"] or float("inf"))
            loss_value, grad_value = loss_sum.item(), grad_norm.item()
            if not math.isfinite(loss_value):
                last = checkpoint.read_pointer(run_dir).get("latest")
                raise TrainingError(
                    f"loss became {loss_value} at step {step} (lr {lr:.3g}, grad norm {grad_value:.3g}); "
                    f"try a lower --lr or --dtype fp32. Last good checkpoint: {last or 'none'} in {run_dir}"
                )
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            elapsed += seconds

            log = {
                "step": step, "tokens": (step + 1) * tokens_per_step, "loss": loss_value, "lr": lr,
                "grad_norm": grad_value, "tokens_per_sec": tokens_per_step / seconds,
                "flops_per_sec": tokens_per_step * flops_per_token / seconds, "data_wait_sec": data_wait,
                "elapsed_sec": elapsed,
            }
            if peak:
                log["mfu"] = log["flops_per_sec"] / peak
            last_step = step + 1 >= cfg["max_steps"]
            out_of_time = cfg["max_time"] and elapsed >= cfg["max_time"] * 1.05
            done = last_step or out_of_time or stop.requested
            if (cfg["eval_every"] and step % cfg["eval_every"] == 0 and step) or done:
                eval_and_log(step, log)
            metrics.write(json.dumps(log) + "\n")
            metrics.flush()
            for track in trackers:
                track(log)
            if (cfg["ckpt_every"] and (step + 1) % cfg["ckpt_every"] == 0) or done:
                save(step, log.get("val_loss"))
            if "train_eval_loss" in log:
                plot_run(run_dir)
            bar.set_postfix_str(
                f"loss {loss_value:.3f} lr {lr:.2e} {log['tokens_per_sec']:,.0f} tok/s "
                + (f"MFU {log['mfu']:.1%}" if peak else f"{log['flops_per_sec'] / 1e9:.0f} GFLOP/s")
            )
            bar.update(1)
            if done:
                break
    bar.close()
    metrics.close()
    prefetch.shutdown(cancel_futures=True)
    if stop.requested:
        say(f"stopped at step {step}; checkpoint saved, continue with --resume")
        raise KeyboardInterrupt
    say(
        f"done: {step + 1} steps, {(step + 1) * tokens_per_step:,} tokens in {elapsed:.0f} s "
        f"({(step + 1 - start_step) * tokens_per_step / max(elapsed - elapsed_before, 1e-9):,.0f} tokens/s this session); "
        f"train {log.get('train_eval_loss', float('nan')):.4f}, val {log.get('val_loss', float('nan')):.4f}"
    )
    return log
