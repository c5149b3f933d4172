"""The step: the model, its optimizer and the update they make together on one process of the world (under
DDP when there are several), a step's windows as this process's slice of the global batch, and the loss of
the fixed evaluation windows and the downstream tasks' accuracies."""

import contextlib

import torch

from train.data import eval_windows, to_device
from train.device import autocast
from train.evaluate import Score, windows_score
from train.optim import make_optimizer, whole
from train.scoring import score_tasks, summary


class StepValues:
    """A step's loss and gradient norm on their way to the host. On a GPU they are copied to pinned memory as
    the step ends, without waiting for it, and `read` waits for that copy alone: a loop that reads a step's
    values once the next step is queued keeps the GPU busy (reading them at once, `.item()`, would stall it
    until the step is done, twice a step)."""

    def __init__(self, loss, grad_norm):
        values = torch.stack([loss.float(), grad_norm.float()])
        if values.device.type == "cuda":
            self.host = torch.empty(2, pin_memory=True)
            self.host.copy_(values, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record()
        else:
            self.host, self.ready = values, None

    def read(self):
        if self.ready is not None:
            self.ready.synchronize()
        return self.host.tolist()


class Trainer:
    """The model, its optimizer and the step they take together, on one process of the world."""

    def __init__(self, model, mixture, history, config, world, token_bytes, tasks=()):
        """`mixture`: the datasets evaluated on; `history` (train/history.py): the windows of each step."""
        self.model, self.mixture, self.history, self.config = model, mixture, history, config
        self.world, self.tasks = world, tasks
        self.device = world.device
        self.token_bytes = torch.tensor(token_bytes, device=self.device)  # for bits per byte
        # Sharded (train/sharding.py), the model is its own wrapper: FSDP reduces the gradients, and its blocks
        # are compiled already.
        self.sharded = config.shard == "fsdp"
        compile_ = torch.compile if config.compile and not self.sharded else (lambda module: module)
        self.eval_model = compile_(model)
        if world.size > 1 and not self.sharded:
            # DDP wrapped in compile, not the other way round: dynamo then splits the graph at DDP's buckets,
            # so gradient all-reduces overlap the backward pass (as torchtitan does).
            ids = [world.device.index] if world.device.type == "cuda" else None
            self.train_model = compile_(torch.nn.parallel.DistributedDataParallel(model, device_ids=ids))
        else:
            self.train_model = self.eval_model
        self.local_micro_batches = config.micro_batches // world.size
        self.reset_optimizer()

    def reset_optimizer(self):
        self.optimizer = make_optimizer(self.model, self.config, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.config.dtype == "fp16" else None

    def windows(self, step):
        """(This process's windows of `step`, a contiguous slice of the step's global windows; the dataset of
        each global window)."""
        per_rank = self.local_micro_batches * self.config.batch_size
        rows = slice(self.world.rank * per_rank, (self.world.rank + 1) * per_rank)
        return self.history.windows(step, per_rank * self.world.size, rows)

    def step(self, windows, lr, momentum=None):
        """One optimizer step at learning rate `lr` (and Muon's `momentum`), queued on the device without waiting
        for it: returns its StepValues, which `values` reads. A step whose loss is not finite still updates the
        weights (under fp16 the gradient scaler skips it): the loop stops at its reading, before any checkpoint."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # a run saved before the scale existed keeps its rates
            if group.get("use_muon") and momentum is not None:
                group["momentum"] = momentum
        loss_sum = torch.zeros((), device=self.device)
        local = self.local_micro_batches
        for micro in range(local):
            x, y = to_device(windows[micro * config.batch_size : (micro + 1) * config.batch_size], self.device)
            # Gradients are averaged over processes once per step, on the last micro-batch.
            sync = micro == local - 1 or self.world.size == 1
            if self.sharded:
                self.model.set_requires_gradient_sync(sync)
            with contextlib.nullcontext() if sync or self.sharded else self.train_model.no_sync():
                with autocast(self.device, config.dtype):
                    _, loss = self.train_model(x, y)
                loss = loss / local
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.detach()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or float("inf"))
        grad_norm = whole(grad_norm)  # sharded: the norm over every process's shards
        if self.scaler:  # skips the update when the gradients overflowed, and lowers the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepValues(loss_sum, grad_norm)

    def values(self, step_values, stop_requested=False):
        """(global mean loss, gradient norm, whether any process asked to stop) of a step: one collective carries
        the loss and the stop request, so every process takes the same decisions."""
        loss, grad_norm = step_values.read()
        loss_total, stops = self.world.sum([loss, float(stop_requested)])
        return loss_total / self.world.size, grad_norm, bool(stops)

    def evaluate(self, split):
        """The Score of the fixed eval windows of `split`, shared out over processes and summed."""
        rows = slice(self.world.rank, None, self.world.size)
        windows = eval_windows(split, self.config.eval_windows, rows)
        config = self.config
        score = windows_score(self.eval_model, windows, config.batch_size, self.device, config.dtype, self.token_bytes)
        if self.sharded:  # each forward gathers the weights, a collective: every process runs as many
            self.idle_forwards(-(-config.eval_windows // self.world.size), len(windows))
        nats, tokens, text_nats, size = self.world.sum(score.values())
        return Score(nats, int(tokens), text_nats, int(size))

    @torch.no_grad()
    def idle_forwards(self, most, mine):
        """Forwards of one window, discarded, so that this process with `mine` windows runs as many batches as
        the process with the `most` (rank 0, whose share is the largest)."""
        batch = self.config.batch_size
        for _ in range(-(-most // batch) - -(-mine // batch)):
            self.eval_model(torch.zeros((1, self.config.context), dtype=torch.long, device=self.device), last_only=True)

    def score_tasks(self):
        """The downstream figures of the run's tasks (train/scoring.py: summary), items shared out over processes."""
        config = self.config
        return summary(score_tasks(self.model, self.tasks, config.batch_size, self.device, config.dtype, self.world))

    def rng_state(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def set_rng_state(self, state):
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)
