"""A small decoder-only Transformer language model and a corpus the project generates itself.

    corpus = grammar_corpus(n_chars=200_000, seed=0)        # text from a random grammar
    corpus = repeated_corpus(n_sentences=8)                 # or a few of its sentences, cycled
    data = CharData(corpus, context=64)                     # character tokens, train batches
    model = TinyGPT(vocab_size=data.vocab_size, context=64) # 4 layers, about 0.8M parameters
    loss = lm_loss(model, data.batch(32, step=0))           # next-character cross-entropy

The corpus is sentences of a small probabilistic grammar (subjects, verbs, objects, adjectives,
clauses), so its entropy per character is finite: the loss has a floor, as real text has, and
the book's relative spike rule does not fire on noise near zero. :func:`repeated_corpus` cycles
a few of its sentences instead: a corpus the model learns well within minutes on a CPU (the
late, low-loss regime of a long run, where the paper's mechanism operates), whose loss keeps a
floor from the first characters of each window, which lack the context to be predicted.
Batches are drawn under (seed, step), so a run is reproducible without a data loader. Nothing
is downloaded.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.training.models import Block

_WORDS = {
    "det": ["the", "a", "every", "no", "some", "this"],
    "adj": ["red", "small", "quiet", "old", "bright", "heavy", "strange", "green", "lazy"],
    "noun": ["fox", "dog", "river", "stone", "bird", "teacher", "engine", "garden", "lamp",
             "child", "market", "storm"],
    "verb": ["sees", "follows", "breaks", "finds", "carries", "hears", "paints", "lifts",
             "watches", "wakes"],
    "adv": ["slowly", "quickly", "again", "never", "often", "softly"],
    "conj": ["and", "but", "while", "because"],
}


def _phrase(rng: torch.Generator, depth: int = 0) -> list[str]:
    def pick(kind):
        words = _WORDS[kind]
        return words[int(torch.randint(len(words), (1,), generator=rng))]

    def chance(p):
        return float(torch.rand(1, generator=rng)) < p

    noun_phrase = lambda: [pick("det")] + ([pick("adj")] if chance(0.5) else []) + [pick("noun")]
    words = noun_phrase() + ([pick("adv")] if chance(0.3) else []) + [pick("verb")] + noun_phrase()
    if depth < 2 and chance(0.35):
        words += [pick("conj")] + _phrase(rng, depth + 1)
    return words


def grammar_corpus(n_chars: int = 200_000, seed: int = 0) -> str:
    """About ``n_chars`` characters of sentences from the grammar above, drawn under ``seed``."""
    rng = torch.Generator().manual_seed(seed)
    out, size = [], 0
    while size < n_chars:
        sentence = " ".join(_phrase(rng)) + " . "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:n_chars]


def repeated_corpus(n_sentences: int = 8, n_chars: int = 200_000, seed: int = 0) -> str:
    """``n_sentences`` simple sentences of the grammar (no clauses), drawn under ``seed``, repeated
    in the same order until the text has ``n_chars`` characters."""
    rng = torch.Generator().manual_seed(seed)
    cycle = "".join(" ".join(_phrase(rng, depth=2)) + " . " for _ in range(int(n_sentences)))
    return (cycle * (n_chars // len(cycle) + 1))[:n_chars]


class CharData:
    """A text as character tokens, with reproducible random batches of ``context`` + 1 tokens."""

    def __init__(self, text: str, context: int = 64, seed: int = 0):
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        index = {c: i for i, c in enumerate(self.chars)}
        self.tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
        self.context, self.seed = int(context), int(seed)

    def batch(self, size: int, step: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (size, context): windows starting at positions drawn under
        (seed, step); targets are the inputs shifted by one character."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        starts = torch.randint(len(self.tokens) - self.context - 1, (size,), generator=gen)
        windows = torch.stack([self.tokens[s:s + self.context + 1] for s in starts.tolist()])
        return windows[:, :-1].to(device), windows[:, 1:].to(device)


class TinyGPT(nn.Module):
    """A decoder-only language model: token and position embeddings, ``n_layers`` pre-LN blocks
    (:class:`utils.training.models.Block`, the book's one Transformer block, which the
    classifier :class:`~utils.training.models.Transformer` stacks too), a final LayerNorm and a
    linear head, with GPT-2's initialisation. No dropout (it would change which Hessian is
    measured). Input (batch, t) token ids, t ≤ ``context``; output (batch, t, vocab_size) logits."""

    def __init__(self, vocab_size: int, context: int = 64, d_model: int = 128,
                 n_layers: int = 4, n_heads: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / (math.sqrt(2 * n_layers) if name.endswith(
                    ("proj.weight", "mlp.2.weight")) else 1.0))

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def lm_loss(model, batch) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per character) of ``model`` on ``batch``."""
    inputs, targets = batch
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
