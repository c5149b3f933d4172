"""The learning rate and Muon's momentum at each step: one schedule per run, a pure function of the step, the run
configuration and its step plan (the step count and the warmup), so that a resumed run goes on where it was.

- "warmdown": linear warmup, flat, then linear to --min-lr over the last --warmdown-fraction of the steps;
  Muon's momentum warms from 0.85 to 0.97 and comes down to 0.90 with the warmdown (nanochat's).
- "cosine": warmup, then a cosine decay to --min-lr; momentum 0.95 throughout (the schedule before #21).
- "open": warmup, then flat for good: a run with no fixed end, whose budget grows night by night
  (warmup-stable-decay: MiniCPM, arXiv 2404.06395; Hägele et al., arXiv 2405.18392). It never decays on its
  own; `train cooldown` branches its latest checkpoint into a run of its own (config.cooldown_from/_steps)
  whose rate decays linearly from the main line's to --min-lr, and Muon's momentum to 0.90 with it.
"""

import math

# In a run, Muon's momentum warms up from 0.85 to 0.97 over the first 400 steps and comes down to 0.90 over the
# learning rate's warmdown, as nanochat's does (fixed, or held through the warmdown, it learned less: docs/log.md).
MOMENTUM_WARMUP = (0.85, 0.97, 400)
MOMENTUM_AT_END = 0.90
COSINE_MOMENTUM = 0.95


def lr_at(step, config, plan):
    """The learning rate of `step`: the main line's schedule, or a cool-down branch's decay after its start."""
    if config.cooldown_from is not None and step > config.cooldown_from:
        start = main_lr_at(config.cooldown_from, config, plan)
        # min_lr exactly at the end
        return config.min_lr + (start - config.min_lr) * (1 - cooldown_progress(step, config))
    return main_lr_at(step, config, plan)


def main_lr_at(step, config, plan):
    """Linear warmup to config.lr, then (config.schedule) flat and a linear decay over the last
    config.warmdown_fraction of the steps, or a cosine decay, to config.min_lr at the last step, or flat."""
    warmup = plan.warmup_steps
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, plan.steps - 1 - warmup)
        return config.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (config.lr - config.min_lr)
    progress = warmdown_progress(step, config, plan)
    # exact at both ends
    return config.lr if progress == 0 else config.min_lr + (config.lr - config.min_lr) * (1 - progress)


def cooldown_progress(step, config):
    """0 at a cool-down's branch point, then linear to 1 at its last step."""
    return min(1.0, (step - config.cooldown_from) / config.cooldown_steps)


def warmdown_from(steps, warmup_steps, fraction):
    """The last step at the full learning rate in a run of `steps` steps: the warmdown is the last `fraction` of
    them, after the warmup."""
    return max(warmup_steps, steps - 1 - round(fraction * (steps - 1)))


def warmdown_progress(step, config, plan):
    """0 until the warmdown begins, then linear to 1 at the last step; 0 while a time budget's step count is
    still unknown (its calibration steps, which are undone), and always on the open schedule."""
    if plan.steps is None or config.schedule == "open":
        return 0.0
    decay_from = warmdown_from(plan.steps, plan.warmup_steps, config.warmdown_fraction)
    if step <= decay_from:
        return 0.0
    return min(1.0, (step - decay_from) / max(1, plan.steps - 1 - decay_from))


def momentum_at(step, config, plan):
    """Muon's momentum at `step`: MOMENTUM_WARMUP, then down to MOMENTUM_AT_END over the warmdown or a
    cool-down; or COSINE_MOMENTUM throughout with the cosine schedule."""
    if config.schedule == "cosine":
        return COSINE_MOMENTUM
    if config.cooldown_from is not None and step > config.cooldown_from:
        start = momentum_at(config.cooldown_from, config, plan)
        return MOMENTUM_AT_END + (start - MOMENTUM_AT_END) * (1 - cooldown_progress(step, config))
    start, end, steps = MOMENTUM_WARMUP
    warmed = start + (end - start) * min(1.0, step / steps)
    return warmed + (MOMENTUM_AT_END - warmed) * warmdown_progress(step, config, plan)
