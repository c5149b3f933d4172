"""The output layer's loss, chunk by chunk: mean cross-entropy of `x @ weight.T` without ever holding all the
logits, and its gradients in the same pass. Every model family's network ends in it."""

import torch

# Rows of the output layer multiplied at once: enough for efficient matrix products, few enough that their
# logits (256 x 50304 in bf16: 26 MB) stay in a CPU's last-level cache.
CHUNK_ROWS = 256
# On a CPU the softmax takes fewer rows at a time, so its fp32 copy stays in a core's L2 cache.
CPU_SOFTMAX_ROWS = 16
# Rows whose logit gradients are kept before one product adds them to the output weight's gradient: this
# bounds the loss's memory (2048 x 50304 in bf16: 206 MB) whatever the batch, while a product per 256-row
# chunk, each reading and writing a [vocab x width] fp32 sum, cost more than the products themselves at
# the gpt2 shape.
GRAD_WEIGHT_ROWS = 2048
IGNORE = -1  # a target below 0 is not predicted: it adds nothing to the loss or its count


@torch.compiler.disable  # the chunk loop is the optimisation; compiling would trace it into one graph
def output_loss(x, weight, targets):
    """Mean cross-entropy of the output layer `x @ weight.T` against `targets` (negative ones ignored),
    computed chunk by chunk."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return ChunkedOutputLoss.apply(x, weight, targets)
    loss_sum, count, _, _ = chunked_output_loss(x, weight, targets, with_grad=False)
    return loss_sum / count.clamp(min=1)


@torch.compiler.disable
def output_token_losses(x, weight, targets):
    """Each row's cross-entropy against its target (0 for an ignored target), without gradients: what
    evaluation sums per token (loss, and bits per byte over the targets that stand for bytes)."""
    losses = torch.empty(len(x), device=x.device)
    chunked_output_loss(x, weight, targets, with_grad=False, row_losses=losses)
    return losses


class ChunkedOutputLoss(torch.autograd.Function):
    """The loss and its gradients in one pass: each chunk's logits become the gradient of the loss with respect
    to them while still in cache, and are folded into the gradients of x and of the weight before the buffer
    is reused. On a CPU step of `tiny` the output layer and its softmax were two thirds of the time, bound
    by memory traffic; the gradients cost memory of the input's size, not the logits'."""

    @staticmethod
    def forward(ctx, x, weight, targets):
        loss_sum, count, grad_x, grad_weight = chunked_output_loss(x, weight, targets, with_grad=True)
        count = count.clamp(min=1)
        ctx.save_for_backward(grad_x, grad_weight, count)
        ctx.dtypes = x.dtype, weight.dtype
        return loss_sum / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        # Scaled in place: these buffers were made for this backward and are used once.
        return tuple(g.to(dtype).mul_(scale) for g, dtype in zip((grad_x, grad_weight), ctx.dtypes)) + (None,)


def chunked_output_loss(x, weight, targets, with_grad, row_losses=None):
    """(summed loss, targets counted, its gradients with respect to x and weight or None) over rows of x, in
    the autocast dtype if one is active: logits in that dtype, softmax and loss in fp32, as
    F.cross_entropy(logits.float(), ignore_index=-1) summed; each row's loss into `row_losses` if given.
    Extra memory is bounded by GRAD_WEIGHT_ROWS."""
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
    softmax_rows = CPU_SOFTMAX_ROWS if device_type == "cpu" else CHUNK_ROWS
    counted = targets >= 0
    ignoring = not bool(counted.all())  # masks cost a pass over the logits: only when something is ignored
    targets = targets.clamp(min=0)
    with torch.autocast(device_type, enabled=False):
        x, w = x.to(dtype), weight.to(dtype)
        buffer_rows = min(GRAD_WEIGHT_ROWS if with_grad else CHUNK_ROWS, len(x))
        logits_buffer = torch.empty(buffer_rows, len(w), dtype=dtype, device=x.device)
        grad_x = torch.empty_like(x) if with_grad else None
        grad_weight = None
        loss_sum = torch.zeros((), device=x.device)
        minus_one = torch.full((softmax_rows, 1), -1.0, device=x.device)
        for start in range(0, len(x), CHUNK_ROWS):
            end = min(start + CHUNK_ROWS, len(x))
            offset = start % buffer_rows
            logits = logits_buffer[offset : offset + end - start]
            torch.mm(x[start:end], w.T, out=logits)
            target, keep = targets[start:end, None], counted[start:end, None]
            target_logit, top_logit = logits.gather(1, target).float(), logits.amax(dim=1, keepdim=True).float()
            top_prob = torch.empty_like(top_logit)
            for group in range(0, end - start, softmax_rows):
                rows = slice(group, group + softmax_rows)
                probs = torch.softmax(logits[rows], dim=-1, dtype=torch.float32)
                torch.amax(probs, dim=1, keepdim=True, out=top_prob[rows])
                if with_grad:  # d(loss)/d(logits) = probs - one-hot(target), written over the logits
                    probs.scatter_add_(1, target[rows], minus_one[: len(probs)])
                    logits[rows] = probs.mul_(keep[rows]) if ignoring else probs
            # log-sum-exp from the largest logit and its probability, which (>= 1/vocab) never underflows
            rows_loss = (top_logit - top_prob.log() - target_logit) * keep
            loss_sum += rows_loss.sum()
            if row_losses is not None:
                row_losses[start:end] = rows_loss[:, 0]
            if with_grad:
                torch.mm(logits, w, out=grad_x[start:end])
                if offset + end - start == buffer_rows or end == len(x):  # the buffer is full: fold it in
                    part = logits_buffer[: offset + end - start].T @ x[start - offset : end]
                    if grad_weight is None:
                        grad_weight = part if end == len(x) else part.float()
                    else:
                        grad_weight += part
    return loss_sum, counted.sum(), grad_x, grad_weight
