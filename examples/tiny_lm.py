"""A tiny causal language model: one transformer block over token streams drawn from a fixed
Markov chain (each token has a few likely successors), next-token targets, the harness's default
token-level cross-entropy, AdamW with a warm-up and a cosine decay, and a target on validation
loss (lower is better). Nothing here comes from the harness; copy this file and tiny_lm.yaml.

    harness run --config examples/tiny_lm.yaml
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, c)
        x = x + self.out(attended)
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int, width: int, heads: int, length: int):
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, width), nn.Parameter(torch.zeros(length, width))
        self.block, self.norm, self.head = Block(width, heads), nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.norm(self.block(x)))  # (examples, tokens, vocab) logits


def build(options: dict) -> nn.Module:
    return TinyLM(options["vocab"], options["width"], options["heads"], options["length"])


def load(options: dict) -> dict:
    """Sequences of `length` + 1 tokens from one Markov chain whose rows put most of their weight on
    `successors` tokens; inputs are the first `length`, targets the next token at each place."""
    generator = torch.Generator().manual_seed(options.get("data_seed", 0))
    vocab, length = options["vocab"], options["length"]
    logits = torch.full((vocab, vocab), -4.0)
    likely = torch.randint(vocab, (vocab, options["successors"]), generator=generator)
    logits.scatter_(1, likely, 2.0)
    chain = torch.softmax(logits, dim=1)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.empty(n, length + 1, dtype=torch.long)
        tokens[:, 0] = torch.randint(vocab, (n,), generator=generator)
        for t in range(length):
            tokens[:, t + 1] = torch.multinomial(chain[tokens[:, t]], 1, generator=generator).squeeze(1)
        return tokens[:, :-1], tokens[:, 1:]

    return {"train": split(options["train"]), "val": split(options["val"]), "test": split(options["test"])}
