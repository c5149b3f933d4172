"""Optimizers: AdamW for every parameter, or Muon for the hidden matrices with AdamW for the rest (the
schedule they follow is train/schedule.py's).

Muon (Keller Jordan's, from the modded-nanogpt speedrun) replaces a matrix's update by the nearest
semi-orthogonal matrix to its Nesterov momentum, computed by a few Newton-Schulz iterations: every direction
of the update gets the same size, where Adam's updates are dominated by a few. Embeddings, the output layer
and the norms' gains are not such matrices and stay with AdamW. The update is scaled by
0.2 * sqrt(max(rows, columns)) (Moonlight, "Muon is Scalable for LLM Training") so that its RMS matches
AdamW's: one --lr, --weight-decay and schedule serve both.
"""

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.optim.adamw import adamw

NEWTON_SCHULZ_STEPS = 5
# The quintic iteration's coefficients: chosen to push every singular value into about [0.7, 1.2] in 5 steps.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_MOMENTUM = 0.95
# Beside Muon the embeddings (tied: the output layer too) learn at 3x the run's rate: each row of the table is
# seen only with its token, and on code's many rare tokens the run's rate left them behind (docs/log.md).
EMBEDDING_LR_SCALE = 3.0


def whole(tensor):
    """A tensor whole on this process: a sharded one gathered (a collective)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def orthogonalize(matrices, dtype, steps=NEWTON_SCHULZ_STEPS):
    """Approximately U V^T of each matrix U S V^T in the batch `matrices` (n, rows, columns), by Newton-Schulz
    iterations in `dtype`. Batched: on small models a product per matrix costs more in overhead than in work."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrices.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # singular values at most 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for groups with use_muon, AdamW for the others. Under torchrun (DDP) every process keeps every
    momentum (cheap, and the saved state is whole), but orthogonalises only the matrices it owns (index modulo
    the number of processes) and broadcasts them: the Newton-Schulz work is shared out, not repeated. Sharded
    (FSDP), each process keeps its shard of each momentum, gathers each matrix's Nesterov momentum whole (one
    all-gather, as the forward gathers the weights), orthogonalises it and applies its own shard of the update:
    the work is repeated on every process, the memory is not."""

    def __init__(self, groups, lr, betas, eps=1e-8, momentum=MUON_MOMENTUM, ns_dtype=torch.float32, fused=None):
        # `fused` in the groups also tells load_state_dict to keep AdamW's step counts on the parameters' device.
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, momentum=momentum, weight_decay=0.0, use_muon=False,
                                      fused=fused))
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "Muon takes no closure"
        rank, size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        index, mine, owners = 0, {}, []
        sharded = any(isinstance(p, DTensor) for g in self.param_groups if g["use_muon"] for p in g["params"])
        for group in self.param_groups:
            if not group["use_muon"]:
                self.adamw(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:  # once: setdefault would build a zeroed copy every step
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - group["momentum"])
                owner, index = index % size, index + 1
                if not sharded:
                    owners.append((p, owner))
                if owner == rank or sharded:
                    mine.setdefault((p.shape, p.dtype), []).append((p, group))
        for same_shape in mine.values():
            nesterov = [whole(p.grad.lerp(self.state[p]["momentum_buffer"], g["momentum"])) for p, g in same_shape]
            momenta = torch.stack(nesterov)
            for (p, group), update in zip(same_shape, orthogonalize(momenta, self.ns_dtype)):
                if sharded:  # every process has the whole update: its own shard of it, without communication
                    update = distribute_tensor(update, p.device_mesh, p.placements, src_data_rank=None)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-group["lr"] * 0.2 * math.sqrt(max(p.shape)))
        if size > 1:  # in the same order on every process, as collectives must be
            works = [dist.broadcast(p, src=owner, async_op=True) for p, owner in owners]
            for work in works:
                work.wait()

    def adamw(self, group):
        """torch's AdamW update (its functional form), for the parameters Muon does not take."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
            [s["step"] for s in states], fused=group["fused"], amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        )


def param_groups(model, use_muon):
    """Matrices inside the blocks (Muon's, if `use_muon`), embeddings and the output layer (AdamW, decayed; at
    EMBEDDING_LR_SCALE times the rate beside Muon), and vectors: norms' gains and biases (AdamW, not decayed).
    A group's `lr_scale` multiplies the scheduled rate (Trainer.step)."""
    outer = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    outer.add(id(model.lm_head.weight))
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() >= 2 and id(p) not in outer]
    embeddings = [p for p in params if p.dim() >= 2 and id(p) in outer]
    vectors = [p for p in params if p.dim() < 2]
    if use_muon:
        groups = [dict(params=hidden, decay=True, use_muon=True),
                  dict(params=embeddings, decay=True, lr_scale=EMBEDDING_LR_SCALE)]
    else:
        groups = [dict(params=hidden + embeddings, decay=True)]
    return [g for g in groups + [dict(params=vectors, decay=False)] if g["params"]]


def make_optimizer(model, config, device):
    """The run's optimizer (config.optimizer), with its options applied."""
    groups = param_groups(model, config.optimizer == "muon")
    fused = device.type in ("cuda", "cpu") or None  # one kernel for all of AdamW's arithmetic where torch has it
    if config.optimizer == "muon":
        ns_dtype = torch.bfloat16 if config.dtype == "bf16" else torch.float32
        optimizer = Muon(groups, lr=config.lr, betas=(config.beta1, config.beta2), ns_dtype=ns_dtype, fused=fused)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)
    apply_options(optimizer, config)
    return optimizer


def apply_options(optimizer, config):
    """Betas and weight decay from the run configuration: at creation, and over a resumed optimizer's saved
    groups, so that options given with --resume take effect."""
    for group in optimizer.param_groups:
        group["betas"] = (config.beta1, config.beta2)
        group["weight_decay"] = config.weight_decay if group.get("decay", group["weight_decay"] > 0) else 0.0
