"""Text generation: greedy, temperature / top-k / top-p sampling and beam search, with a key/value cache.

With the cache each new token costs one position. Once a sequence fills the context, every further token
is predicted from the last `context` tokens (a sliding window), exactly as without the cache.
"""

import torch
from torch.nn import functional as F

from prepare.tokenizer import encode
from train.device import autocast
from train.models.layers import make_caches

SAMPLE_PROMPTS = ("", "The")  # what training shows at each evaluation; "" starts a fresh document


def prompt_ids(encoding, text):
    """A prompt as documents were seen in training: after an end-of-text token."""
    return [encoding.eot_token] + encode(encoding, text)


def is_text(encoding, token):
    """Whether a generated token is text: not end-of-text, nor a padded id past the vocabulary."""
    return token < encoding.n_vocab and token != encoding.eot_token


class Decoder:
    """Feeds tokens to the model one step at a time and returns next-token logits (padded ids masked)."""

    def __init__(self, model, use_cache):
        self.model, self.use_cache = model, use_cache
        self.context = model.config.context
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.caches = None

    def logits(self, sequences, new):
        """Logits after `sequences` (batch, length), of which the last `new` tokens are not yet seen."""
        if not self.use_cache or sequences.size(1) > self.context:
            self.caches = None
            out, _ = self.model(sequences[:, -self.context :], last_only=True)
        else:
            if self.caches is None:
                self.caches = make_caches(self.model, sequences.size(0), self.device, self.dtype)
                new = sequences.size(1)
            out, _ = self.model(sequences[:, -new:], caches=self.caches, last_only=True)
        out = out[:, -1, :].float()
        out[:, self.model.config.vocab_size :] = float("-inf")
        return out

    def reorder(self, rows):
        if self.caches and not torch.equal(rows, torch.arange(len(rows), device=rows.device)):
            for cache in self.caches:
                cache.reorder(rows)


def choose(logits, temperature, top_k, top_p, generator):
    """One token per row: argmax when temperature is 0, else a draw from the filtered distribution."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample(model, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, eot=None,
           use_cache=True):
    """Yield new token ids one at a time after `prompt` (a list of ids), stopping at `eot`."""
    device = next(model.parameters()).device
    sequence = torch.tensor([prompt], dtype=torch.long, device=device)
    decoder, new = Decoder(model, use_cache), len(prompt)
    for _ in range(max_new_tokens):
        token = choose(decoder.logits(sequence, new), temperature, top_k, top_p, generator)
        yield int(token)
        if eot is not None and int(token) == eot:
            return
        sequence, new = torch.cat([sequence, token[:, None]], dim=1), 1


def best_reachable(score, length, max_length, length_penalty):
    """The highest normalised score any continuation of a running beam (log-probability `score` after `length`
    tokens) could still reach: log-probabilities only fall as tokens are added, so with a positive penalty
    the best case is the same sum spread over the longest length, and otherwise over the next length."""
    if length_penalty > 0:
        return score / max_length**length_penalty
    return score / (length + 1) ** length_penalty


@torch.no_grad()
def beam_search(model, prompt, max_new_tokens, num_beams=4, length_penalty=1.0, eot=None, use_cache=True):
    """The highest-scoring continuation: sum of log-probabilities / (new tokens ** length_penalty).

    Keeps the `num_beams` best finished hypotheses, and stops only when no running beam can beat the worst
    of them, or at the token budget."""
    device = next(model.parameters()).device
    sequences = torch.tensor([prompt], dtype=torch.long, device=device)
    scores = torch.zeros(1, device=device)
    decoder, new = Decoder(model, use_cache), len(prompt)
    finished = []  # (normalised score, new tokens), best first, at most num_beams
    for length in range(1, max_new_tokens + 1):
        logprobs = F.log_softmax(decoder.logits(sequences, new), dim=-1) + scores[:, None]
        top = torch.topk(logprobs.view(-1), min(2 * num_beams, logprobs.numel()))
        rows, keep = [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, token = divmod(flat, logprobs.size(1))
            if token == eot:
                finished.append((score / length**length_penalty, sequences[row, len(prompt) :].tolist() + [token]))
            elif len(rows) < num_beams:
                rows.append(row)
                keep.append((token, score))
        finished = sorted(finished, key=lambda f: f[0], reverse=True)[:num_beams]
        if not rows or length == max_new_tokens:
            alive = [(s / length**length_penalty, seq[len(prompt) :].tolist() + [t])
                     for (t, s), seq in zip(keep, sequences[rows])]
            return max(finished + alive, key=lambda f: f[0])[1]
        if len(finished) == num_beams:
            reachable = max(best_reachable(s, length, max_new_tokens, length_penalty) for _, s in keep)
            if reachable <= finished[-1][0]:
                return finished[0][1]
        decoder.reorder(torch.tensor(rows, device=device))
        tokens = torch.tensor([t for t, _ in keep], device=device)
        sequences = torch.cat([sequences[rows], tokens[:, None]], dim=1)
        scores, new = torch.tensor([s for _, s in keep], device=device), 1


def sample_lines(model, encoding, config, step):
    """A few continuations of fixed prompts, from a generator of their own so training RNG is untouched."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model.eval()
    lines = []
    for prompt in SAMPLE_PROMPTS:
        with autocast(device, config.dtype):
            new = sample(model, prompt_ids(encoding, prompt), 48, temperature=0.8, top_k=50, generator=generator,
                         eot=encoding.eot_token)
            text = prompt + encoding.decode([t for t in new if is_text(encoding, t)])
        lines.append(f"[step {step}] {text!r}")
    model.train()
    return lines
