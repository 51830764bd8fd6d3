"""A Hugging Face-style workload: each batch is a dict {"input_ids", "attention_mask"} of padded
token sequences, the model is called model(**batch) and returns {"logits": ...}, and the harness's
default loss (cross-entropy) and metric (accuracy) read those logits. Nothing here comes from the
harness; a transformers model (AutoModelForSequenceClassification) fits the same interface.

    harness run --config examples/hf_style.yaml
"""

import torch
from torch import nn

PAD = 0


class BagOfTokens(nn.Module):
    """Embeddings averaged over the real tokens (the mask leaves padding out), then a classifier."""

    def __init__(self, vocab: int, width: int, classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=PAD)
        self.hidden = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return {"logits": self.head(self.hidden(pooled))}


def build(options: dict) -> nn.Module:
    return BagOfTokens(options["vocab"], options["width"], options["classes"])


def load(options: dict) -> dict:
    """Sequences of 4..`length` random tokens, padded to `length`; the label is the class whose
    marker tokens (tokens 1..classes) the sequence holds most of. The same options give the same data."""
    generator = torch.Generator().manual_seed(options.get("data_seed", 0))
    vocab, length, classes = options["vocab"], options["length"], options["classes"]

    def split(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        ids = torch.randint(classes + 1, vocab, (n, length), generator=generator)
        label = torch.randint(classes, (n,), generator=generator)
        markers = torch.rand(n, length, generator=generator) < 0.3
        ids = torch.where(markers, (label + 1).unsqueeze(1), ids)
        lengths = torch.randint(4, length + 1, (n, 1), generator=generator)
        mask = (torch.arange(length) < lengths).long()
        return {"input_ids": ids * mask, "attention_mask": mask}, label

    return {"train": split(options["train"]), "val": split(options["val"]), "test": split(options["test"])}
