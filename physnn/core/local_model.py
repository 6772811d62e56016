"""A stack of physical blocks, each with its own class head: the model of local cross-entropy training.

One block::

    h_in --encoder--> drive --system(.)--> y --standardise--> [y, standardise(h_in)] --nn.Linear--> z --head--> logits_i

The linear layer and the head are the only trainable parts; ``z`` (detached)
is the next block's input. Unlike :class:`physnn.core.model.PNN` there is no label
embedding: the label never goes through the physics, so every drive channel
carries data, one pass per sample answers for every class (L queries per
sample at inference, not C*L), and training needs no negative data (L queries
per sample per epoch, half of MF-FF's 2L). The prediction sums the blocks'
log-probabilities: each block is a classifier on its own, and deeper blocks
refine the shallower ones' evidence.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from physnn.core.e2e_model import E2EBlock, black_box
from physnn.core.model import check_features, check_stack, hidden_widths, seeded_linear
from physnn.core.system import PhysicalSystem

__all__ = ["LocalNet"]


class LocalNet(nn.Module):
    """Physical blocks with per-block class heads (see the module docstring).

    Args:
        systems: one system per block (the same object may serve several blocks).
        n_features: data features (block 0's drive width; wider systems are padded).
        n_classes: classes.
        hidden: output width of each block's linear layer (an int or one per block).
        skip, encoder: as in :class:`physnn.core.model.PNN`.
        seed: seeds the digital weights.
    """

    def __init__(
        self,
        systems: Sequence[PhysicalSystem],
        n_features: int,
        n_classes: int,
        *,
        hidden: int | Sequence[int] | None = 100,
        skip: bool = True,
        encoder: str = "minmax",
        seed: int = 0,
    ):
        super().__init__()
        systems = check_stack(systems, n_features, n_classes, "a LocalNet")
        widths = hidden_widths(systems, hidden if hidden is not None else 100, len(systems))
        self.n_features = n_features
        self.n_classes = n_classes
        self.hparams = dict(hidden=widths, skip=skip, encoder=encoder, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        blocks, heads, width = [], [], n_features
        for system, out in zip(systems, widths):
            blocks.append(E2EBlock(system, width, out, skip=skip, encoder=encoder, generator=gen))
            heads.append(seeded_linear(out, n_classes, gen))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)

    @property
    def systems(self) -> list[PhysicalSystem]:
        return [b.system for b in self.blocks]

    def check_features(self, x) -> torch.Tensor:
        return check_features(x, self.n_features)

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Summed per-block log-probabilities ``[B, C]`` (one query per block per sample)."""
        h, total = x, None
        for i, (block, head) in enumerate(zip(self.blocks, self.heads)):
            z = block(block.measure(h, black_box, i))
            lp = torch.log_softmax(head(z), dim=1)
            total = lp if total is None else total + lp
            h = z
        assert total is not None
        return total

    @torch.no_grad()
    def predict(self, x, batch_size: int = 512) -> torch.Tensor:
        x = self.check_features(x)
        return torch.cat([self.log_probs(x[s : s + batch_size]).argmax(1) for s in range(0, x.shape[0], batch_size)])

    def score(self, x, y, batch_size: int = 512) -> float:
        """Accuracy on ``(x, y)``."""
        return float((self.predict(x, batch_size) == torch.as_tensor(y)).float().mean())
