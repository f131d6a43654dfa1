"""A text student that fine-tunes its encoder: a pretrained transformer encoder (a Hugging Face
model, such as the one inside a sentence-transformers directory) read end to end, with a small
MLP head on its mean-pooled token states.

Its inputs are token ids, as a table's rows: ``(N, S * L)`` float32 values (ids below 2^24 are
exact), ``S`` segments of ``L`` tokens each, padded with the tokenizer's pad id. A batch is cut
to its longest segment before the encoder reads it (dynamic padding), so short texts cost short
sequences whatever ``L`` is.

Segments: one text (``single``); a pair read by the same encoder apart (``siamese``: features
``[u, v, |u - v|, u * v]`` of the two pooled vectors, as sentence-BERT); or a pair read together
as one sequence (``cross``: ``[CLS] a [SEP] b [SEP]``, its second segment marked by token type).
The rationale is the pooled features the head reads: the representation a projection head maps
onto the teacher's rationale embedding, so that the rationale shapes the encoder itself.
"""

from __future__ import annotations

import torch
from torch import nn

from stepdistill.terms import Outputs

PAIR_MODES = ("single", "siamese", "cross")


class EncoderStudentModel(nn.Module):
    """``encoder_config``: the encoder's Hugging Face config (a dict: the model is built from it,
    and its pretrained weights loaded by the caller); ``segments``, ``max_tokens``: the ids'
    layout; ``mode``: one of ``PAIR_MODES``; ``pad_id``, ``sep_id``: the tokenizer's; ``hidden``:
    the head's hidden widths; ``freeze_layers``: the embeddings and this many lowest layers are
    not trained; ``encoder_lr``: the encoder's learning rate (the head's is the method's);
    ``bf16``: its training steps run in bfloat16 autocast (``autocast_dtype``), its outputs in
    float32 all the same."""

    def __init__(
        self,
        encoder_config: dict,
        n_logits: int,
        mode: str,
        max_tokens: int,
        pad_id: int,
        sep_id: int,
        hidden: tuple[int, ...] = (256,),
        freeze_layers: int = 0,
        encoder_lr: float = 2e-5,
        bf16: bool = False,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if mode not in PAIR_MODES:
            raise ValueError(f"mode {mode!r} is none of {PAIR_MODES}")
        # The constructor's arguments: what rebuilds this model around saved weights (run_dir.py).
        self.spec = {
            "kind": "encoder",
            "encoder_config": encoder_config,
            "n_logits": n_logits,
            "mode": mode,
            "max_tokens": max_tokens,
            "pad_id": pad_id,
            "sep_id": sep_id,
            "hidden": list(hidden),
            "freeze_layers": freeze_layers,
            "encoder_lr": encoder_lr,
            "bf16": bf16,
        }
        config = AutoConfig.for_model(**encoder_config)
        self.encoder = AutoModel.from_config(config)
        self.mode, self.max_tokens, self.pad_id, self.sep_id, self.encoder_lr = mode, max_tokens, pad_id, sep_id, encoder_lr
        self.segments = 2 if mode == "siamese" else 1
        width = config.hidden_size * (4 if mode == "siamese" else 1)
        widths = (width, *hidden)
        self.blocks = nn.Sequential(*(layer for a, b in zip(widths[:-1], widths[1:]) for layer in (nn.Linear(a, b), nn.ReLU())))
        self.head = nn.Linear(widths[-1], n_logits)
        self.rationale_width = width
        # Its encoder's dropout draws from torch's global generator (engines/tabular.py seeds it).
        self.draws_dropout = True
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        # Loss terms are measured after each epoch on this many training rows (engines/tabular.py).
        self.measurement_rows = 256
        self._freeze(freeze_layers)

    def _freeze(self, n_layers: int) -> None:
        if n_layers <= 0:
            return
        frozen = [self.encoder.embeddings, *self.encoder.encoder.layer[:n_layers]]
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    @property
    def shared_layer(self) -> torch.Tensor:
        """The weight every loss term's gradient passes through (the head's first), where
        GradNorm compares the terms' gradient norms."""
        return next(iter(self.blocks.parameters())) if len(self.blocks) else self.head.weight

    def parameter_groups(self) -> list[dict]:
        """The optimizer's groups: the head's parameters at the method's learning rate (first:
        the one a run's history records), the encoder's trained ones at ``encoder_lr`` (a
        pretrained encoder moves little, a new head a lot)."""
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        return [{"params": [*self.blocks.parameters(), *self.head.parameters()]}, {"params": encoder, "lr": self.encoder_lr}]

    def row_lengths(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) the real tokens of each row, what batches of similar lengths are made by."""
        return (x != self.pad_id).sum(1)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, H): the mean of the encoder's last states over real tokens,
        after cutting the batch to its longest sequence."""
        mask = (ids != self.pad_id).long()
        length = max(1, int(mask.sum(1).max()))
        return self.masked_mean(ids[:, :length], mask[:, :length])

    def masked_mean(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and attention mask -> (B, H): the mean of the last states where the mask is 1."""
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.mode == "cross":
            # The second text starts after the first [SEP]: token type 1 from there on.
            separators = (ids == self.sep_id).long()
            inputs["token_type_ids"] = (separators.cumsum(1) - separators > 0).long()
        states = self.encoder(**inputs).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return (states.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def read(self, segments: list[torch.Tensor]) -> Outputs:
        """The outputs from the segments' pooled vectors, (B, H) each: one, or a siamese pair."""
        if self.mode == "siamese":
            u, v = segments
            features = torch.cat([u, v, (u - v).abs(), u * v], dim=1)
        else:
            (features,) = segments
        return Outputs(self.head(self.blocks(features)).float(), features.float())

    def forward(self, x: torch.Tensor) -> Outputs:
        ids = x.round().long().view(len(x), self.segments, self.max_tokens)
        # Each text of a pair apart, so that neither is padded to the other's length.
        return self.read([self.pooled(ids[:, s]) for s in range(self.segments)])
