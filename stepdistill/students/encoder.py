"""A text student that fine-tunes its encoder: a pretrained transformer encoder (a Hugging Face
model, such as the one inside a sentence-transformers directory) read end to end, with a small
MLP head on its mean-pooled token states.

Its inputs are token ids, as a table's rows: ``(N, S * L)`` float32 values (ids below 2^24 are
exact), ``S`` segments of ``L`` tokens each, padded with the tokenizer's pad id. A batch is cut
to its longest segment before the encoder reads it (dynamic padding), so short texts cost short
sequences whatever ``L`` is.

Segments: one text (``single``); a pair read by the same encoder apart (``siamese``: features
``[u, v, |u - v|, u * v]`` of the two pooled vectors, as sentence-BERT); a pair read together
as one sequence (``cross``: ``[CLS] a [SEP] b [SEP]``, its second segment marked by token type);
or, for multiple choice, K such sequences, a question with each of its choices (``choices``),
each scored by the head alike: the K scores are the logits.
The rationale is the pooled features the head reads: the representation a projection head maps
onto the teacher's rationale embedding, so that the rationale shapes the encoder itself. Of a
multiple-choice row, the choices' features weighted by the softmax of their scores (as
``ChoiceScorerModel``'s): the representation of the answers the student believes in.

Frozen lowest layers (``freeze_layers``) are read as at inference, without dropout, so that what
they make of a text is the same every time it is read: given a ``FrozenStates``, the student
computes it once per text and keeps it, and its steps run only the layers it trains.
"""

from __future__ import annotations

import torch
from torch import nn

from stepdistill.errors import StepDistillError
from stepdistill.terms import Outputs

PAIR_MODES = ("single", "siamese", "cross", "choices")
# Without gradients a large batch is read in chunks of this many rows of similar lengths: cut to
# its longest text, one batch would pad every other text to it.
INFERENCE_CHUNK = 64
# What a student's frozen layers made of the texts it read is kept up to this many bytes; beyond,
# it is computed every time (MiniLM on e-SNLI: about 40 kB a sentence, 50,000 sentences).
FROZEN_STATES_BYTES = 2 * 1024**3


class FrozenStates:
    """The outputs of an encoder's frozen lowest layers by the token ids that made them, (L, H)
    float32 each (L the text's real tokens), shared by the students of a run and the runs after
    it (students/build.py): their frozen layers are the same pretrained ones."""

    def __init__(self, max_bytes: int = FROZEN_STATES_BYTES):
        self.states: dict[bytes, torch.Tensor] = {}
        self.bytes, self.max_bytes = 0, max_bytes

    def get(self, key: bytes) -> torch.Tensor | None:
        return self.states.get(key)

    def put(self, key: bytes, states: torch.Tensor) -> None:
        size = states.numel() * states.element_size()
        if self.bytes + size <= self.max_bytes:
            self.states[key] = states
            self.bytes += size


class EncoderStudentModel(nn.Module):
    """``encoder_config``: the encoder's Hugging Face config (a dict: the model is built from it,
    and its pretrained weights loaded by the caller); ``n_logits``: the classifier's logits (for
    ``choices``, the number of choices K, each scored); ``max_tokens``: the ids' layout, segments
    of this many; ``mode``: one of ``PAIR_MODES``; ``pad_id``, ``sep_id``: the tokenizer's; ``hidden``:
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
        self.segments = {"siamese": 2, "choices": n_logits}.get(mode, 1)
        width = config.hidden_size * (4 if mode == "siamese" else 1)
        widths = (width, *hidden)
        self.blocks = nn.Sequential(*(layer for a, b in zip(widths[:-1], widths[1:]) for layer in (nn.Linear(a, b), nn.ReLU())))
        self.head = nn.Linear(widths[-1], 1 if mode == "choices" else n_logits)
        self.rationale_width = width
        # Its encoder's dropout draws from torch's global generator (engines/tabular.py seeds it),
        # and is what a consistency term perturbs it with: noise on token ids would change tokens.
        self.draws_dropout = True
        self.perturbs_itself = True
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        # Loss terms are measured after each epoch on this many training rows (engines/tabular.py).
        self.measurement_rows = 128
        if freeze_layers and not (hasattr(self.encoder, "embeddings") and hasattr(getattr(self.encoder, "encoder", None), "layer")):
            raise StepDistillError(f"student.freeze_layers needs an encoder laid out as BERT's (embeddings, encoder.layer); a {config.model_type} model is not: set freeze_layers to 0")
        self.freeze_layers = freeze_layers
        # Set by whoever trains the student (students/build.py): the frozen layers' outputs, kept.
        self.frozen_states: FrozenStates | None = None
        for module in self._frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.freeze_layers <= 0:
            return []
        return [self.encoder.embeddings, *self.encoder.encoder.layer[: self.freeze_layers]]

    def train(self, mode: bool = True):
        """Frozen layers stay in inference mode (no dropout): their outputs do not change."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

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
        if self.freeze_layers > 0:
            states = self._layers(self._frozen_outputs(ids, mask), mask, self.encoder.encoder.layer[self.freeze_layers :])
        else:
            states = self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=self._token_types(ids)).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return (states.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def _token_types(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L): 0 throughout, or in a pair read together (cross, choices) 1 for the second text, from after the first [SEP] on."""
        if self.mode not in ("cross", "choices"):
            return torch.zeros_like(ids)
        separators = (ids == self.sep_id).long()
        return (separators.cumsum(1) - separators > 0).long()

    def _layers(self, states: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
        """(B, L, H) states through ``layers`` of the encoder, padding masked."""
        from transformers.masking_utils import create_bidirectional_mask

        attention = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=states, attention_mask=mask)
        for layer in layers:
            out = layer(states, attention_mask=attention)
            states = out[0] if isinstance(out, tuple) else out
        return states

    def _frozen(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, H): the embeddings and the frozen layers, in float32."""
        with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
            states = self.encoder.embeddings(input_ids=ids, token_type_ids=self._token_types(ids))
            return self._layers(states, mask, self.encoder.encoder.layer[: self.freeze_layers])

    def _frozen_outputs(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``_frozen``, each text's read from ``frozen_states`` where it was computed before. A
        text is read alone there (its real tokens), which masking makes the same as in a batch."""
        if self.frozen_states is None:
            return self._frozen(ids, mask)
        lengths = mask.sum(1).tolist()
        keys = [ids[i, :n].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        known = [self.frozen_states.get(key) for key in keys]
        missing = [i for i, states in enumerate(known) if states is None]
        if missing:
            computed = self._frozen(ids[missing], mask[missing])
            for j, i in enumerate(missing):
                known[i] = computed[j, : lengths[i]].clone()
                self.frozen_states.put(keys[i], known[i])
        out = ids.new_zeros((len(ids), ids.shape[1], known[0].shape[1]), dtype=torch.float32)
        for i, states in enumerate(known):
            out[i, : len(states)] = states
        return out

    def read(self, segments: list[torch.Tensor]) -> Outputs:
        """The outputs from the segments' pooled vectors, (B, H) each: one, a siamese pair, or a
        row's choices."""
        if self.mode == "choices":
            pooled = torch.stack(segments, 1)  # (B, K, H)
            scores = self.head(self.blocks(pooled)).squeeze(-1).float()
            belief = torch.softmax(scores, dim=-1)
            return Outputs(scores, (belief.unsqueeze(-1) * pooled.float()).sum(1))
        if self.mode == "siamese":
            u, v = segments
            features = torch.cat([u, v, (u - v).abs(), u * v], dim=1)
        else:
            (features,) = segments
        return Outputs(self.head(self.blocks(features)).float(), features.float())

    def forward(self, x: torch.Tensor) -> Outputs:
        ids = x.round().long().view(len(x), self.segments, self.max_tokens)
        if torch.is_grad_enabled() or len(ids) <= INFERENCE_CHUNK:
            return self._read_ids(ids)
        order = torch.argsort((ids != self.pad_id).sum((1, 2)), stable=True)
        parts = [self._read_ids(ids[rows]) for rows in order.split(INFERENCE_CHUNK)]
        back = torch.argsort(order)
        return Outputs(torch.cat([p.logits for p in parts])[back], torch.cat([p.rationale for p in parts])[back])

    def _read_ids(self, ids: torch.Tensor) -> Outputs:
        """(B, S, L) ids -> outputs; each text of a pair apart, so that neither is padded to the other's length."""
        return self.read([self.pooled(ids[:, s]) for s in range(self.segments)])
