"""Patches of the training code that bench/learning_bench.py applies in the child processes of a row: the
schedules, batch, loss and optimizer settings our recipe replaced or that nanochat's differs by. They are
measurements, not options: what won became the default, what lost stays here to be measured again."""


def cosine():
    """The learning rate of `--schedule cosine` with the Muon momentum schedule of warmdown's."""
    import dataclasses

    from train import schedule, session

    def lr_at(step, config, plan):
        return schedule.lr_at(step, dataclasses.replace(config, schedule="cosine"), plan)

    session.lr_at = lr_at


def fixed_momentum():
    """Muon's momentum before #21: 0.95 at every step."""
    from train import session

    session.momentum_at = lambda step, config, plan: 0.95


def momentum_warmup_200():
    """Muon's momentum warmed from 0.85 to 0.97 over 200 steps instead of 400: the same tokens as before the
    batch doubled in stop 30."""
    from train import schedule

    schedule.MOMENTUM_WARMUP = (0.85, 0.97, 200)


def half_batch_until(steps):
    """Each step before `steps` trains on the first half of its windows only, on one process (a run that sets
    --max-steps to hold the same tokens as another compares with it at equal tokens; its metrics still count
    every step's tokens as whole)."""
    from train import trainer

    windows = trainer.Trainer.windows

    def ramped(self, step):
        drawn, datasets = windows(self, step)
        return (drawn[: len(drawn) // 2], datasets[: len(datasets) // 2]) if step < steps else (drawn, datasets)

    trainer.Trainer.windows = ramped


def batch_ramp_120():
    half_batch_until(120)


def batch_ramp_250():
    half_batch_until(250)


def z_loss():
    """PaLM's z-loss, 1e-4 x the mean squared log-sum-exp of the logits, added to the training loss (only a loss
    term: the model stays exportable). The output layer's loss is computed here without the chunked kernel
    (slower, the same value); evaluation scores the cross-entropy alone."""
    import torch
    from torch.nn import functional as F

    from train.models import layers

    chunked = layers.output_loss

    def output_loss(x, weight, targets):
        if not torch.is_grad_enabled():
            return chunked(x, weight, targets)
        logits = (x @ weight.T).float()
        kept = targets >= 0
        z = torch.logsumexp(logits[kept], dim=-1)
        return F.cross_entropy(logits, targets, ignore_index=-1) + 1e-4 * z.square().mean()

    layers.output_loss = output_loss


def embedding_rates(embedding, output):
    """AdamW rates of their own for the token embedding and the output layer, as multiples of the run's --lr
    (the group's `lr_scale`, which Trainer.step applies; a tied matrix is the output layer's and takes `output`)."""
    from train import optim

    groups = optim.param_groups

    def split(model, use_muon):
        out = []
        for group in groups(model, use_muon):
            if group.get("decay") and not group.get("use_muon"):  # the embedding and the output layer
                head = [p for p in group["params"] if p is model.lm_head.weight]
                rest = [p for p in group["params"] if p is not model.lm_head.weight]
                out += [dict(group, params=rest, lr_scale=embedding), dict(group, params=head, lr_scale=output)]
            else:
                out.append(group)
        return [g for g in out if g["params"]]

    optim.param_groups = split


def untied_lrs():
    """Untied embeddings at nanochat's AdamW rates, 0.3 and 0.008 scaled by 1/sqrt(width/768): 0.73 for the
    token embedding and 0.0196 for the output layer at width 128, as multiples of the run's --lr."""
    from train.models import TRAIN_DEFAULTS

    lr = TRAIN_DEFAULTS["tiny-llama"]["lr"]  # the rows run at the preset's rate
    embedding_rates(0.3 * (768 / 128) ** 0.5 / lr, 0.008 * (768 / 128) ** 0.5 / lr)


def untied_embedding_lr_10x():
    """Untied, the token embedding's AdamW rate 10 times the run's, the output layer's the run's."""
    embedding_rates(10, 1)


def untied_embedding_lr_30x():
    """Untied, the token embedding's AdamW rate 30 times the run's (0.12), the output layer's the run's."""
    embedding_rates(30, 1)


def tied_embedding_rate(scale):
    """A patch: the embeddings' AdamW rate beside Muon `scale` times the run's (EMBEDDING_LR_SCALE, 3 since
    stop 27 of #21)."""
    def patch():
        from train import optim

        optim.EMBEDDING_LR_SCALE = scale

    return patch


embedding_lr_1x, embedding_lr_6x, embedding_lr_10x = (tied_embedding_rate(s) for s in (1.0, 6.0, 10.0))


def nanochat_betas():
    """nanochat's AdamW betas and epsilon for the embeddings: (0.8, 0.995) for the token embedding, (0.8, 0.96) for
    the output layer, eps 1e-10 (ours: --beta1/--beta2, 0.9 and 0.95, eps 1e-8). After untied_lrs."""
    from train import trainer

    make = trainer.make_optimizer

    def made(model, config, device):
        optimizer = make(model, config, device)
        for group in optimizer.param_groups:
            if group.get("decay") and not group.get("use_muon"):
                head = any(p is model.lm_head.weight for p in group["params"])
                group["betas"], group["eps"] = ((0.8, 0.96) if head else (0.8, 0.995)), 1e-10
        return optimizer

    trainer.make_optimizer = made


def momentum_hold():
    """Muon's momentum before it came down over the warmdown: warmed up to 0.97, then held."""
    from train import optim, schedule, session

    def at(step, config, plan):
        start, end, steps = schedule.MOMENTUM_WARMUP
        return optim.MUON_MOMENTUM if config.schedule == "cosine" else start + (end - start) * min(1.0, step / steps)

    session.momentum_at = at


def wd_cosine():
    """The Muon matrices' weight decay decayed to 0 by a cosine over the run, as nanochat's (ours: --weight-decay
    throughout)."""
    import math

    from train import schedule, session, trainer

    progress = {"at": 0.0}

    def lr_at(step, config, plan):  # the loop asks for each step's learning rate before the step: note where it is
        progress["at"] = step / plan.steps
        return schedule.lr_at(step, config, plan)

    step = trainer.Trainer.step

    def patched(self, windows, lr, momentum=None):
        for group in self.optimizer.param_groups:
            if group.get("use_muon"):
                group["weight_decay"] = self.config.weight_decay * 0.5 * (1 + math.cos(math.pi * progress["at"]))
        return step(self, windows, lr, momentum)

    session.lr_at, trainer.Trainer.step = lr_at, patched



# Polar Express's coefficients for 5 iterations (arXiv 2505.16932), as nanochat's optim.py has them.
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def polar_orthogonalize(x):
    """U V^T of each matrix of x (n, rows, columns) by Polar Express's five iterations, as nanochat computes it."""
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
    for a, b, c in POLAR_EXPRESS:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def polar_express():
    """Muon's Newton-Schulz iteration with Polar Express's coefficients, one set per iteration."""
    from train import optim

    optim.orthogonalize = lambda matrices, dtype, steps=5: polar_orthogonalize(matrices.to(dtype))


def nanochat_muon():
    """nanochat's Muon update (its optim.py's muon_step_fused) at our learning-rate scale: rows equilibrated
    (MuonEq), Polar Express, the norm snapped to sqrt(min(rows, columns)), NorMuon's variance reduction (a
    second moment per row or column, beta2 0.9) and cautious weight decay. One process only."""
    import math

    import torch

    from train import optim

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if not group["use_muon"]:
                self.adamw(group)
                continue
            for p in group["params"]:
                state = self.state[p]
                reduce = -1 if p.size(-2) >= p.size(-1) else -2
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                    state["second_momentum_buffer"] = torch.zeros_like(p.float().mean(dim=reduce, keepdim=True))
                buffer, second = state["momentum_buffer"], state["second_momentum_buffer"]
                buffer.lerp_(p.grad, 1 - group["momentum"])
                x = p.grad.lerp(buffer, group["momentum"]).float()
                x = x * (x.norm() / x.size(-2) ** 0.5 / x.norm(dim=-1, keepdim=True).clamp_min(1e-6))  # MuonEq
                g = polar_orthogonalize(x[None])[0]
                g = g * (min(g.shape) ** 0.5 / g.norm().clamp_min(1e-6))
                v_mean = g.square().mean(dim=reduce, keepdim=True)
                v_norm = (v_mean.sum() * g.size(reduce)).sqrt()
                second.lerp_(v_mean, 1 - 0.9)
                step_size = second.clamp_min(1e-10).rsqrt()
                v_norm_new = ((v_mean * g.size(reduce)) * step_size.square()).sum().sqrt()
                g = g * step_size * (v_norm / v_norm_new.clamp_min(1e-10))
                lr = group["lr"] * 0.2 * math.sqrt(max(p.shape))
                mask = (g * p) >= 0
                p.sub_(lr * g.to(p.dtype) + group["lr"] * group["weight_decay"] * p * mask)

    optim.Muon.step = step
