"""View classification heads (paper section 2.2).

MGCN_R: "each residual block of its encoder is connected with a global average pooling (GAP)
layer, and a feature vector is composed by concatenating the pooled features from multiple
levels; two fully connected layers are used as the classifier based on the pooled features."
The STL baseline is the default ResNet classifier: GAP of the last stage and one linear layer.

Shapes: B batch; features (B, C_i, h_i, w_i); logits (B, num_classes) (11 views, taxonomy order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from abdus.taxonomy import NUM_VIEWS


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C): mean over the spatial axes."""
    return x.mean(dim=(2, 3))


class MultiLevelViewHead(nn.Module):
    """GAP of every level, concatenated, then FC -> ReLU -> dropout -> FC -> logits.

    Args:
        in_channels: channels of each level (stages 1-4 of the classification path).
        hidden: width of the first fully connected layer (not given in the paper).
        dropout: dropout probability before the last layer (0 disables it).
        num_classes: number of views (11).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        hidden: int = 512,
        dropout: float = 0.5,
        num_classes: int = NUM_VIEWS,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(sum(in_channels), hidden)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([global_average_pool(f) for f in features], dim=1)  # (B, sum C_i)
        return self.fc2(self.dropout(self.relu(self.fc1(pooled))))  # (B, num_classes)


class SingleLevelViewHead(nn.Module):
    """ResNet's own classifier: GAP of the last stage then one linear layer ``fc``."""

    def __init__(self, in_channels: int, num_classes: int = NUM_VIEWS) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, num_classes) logits."""
        return self.fc(global_average_pool(feature))


__all__ = ["MultiLevelViewHead", "SingleLevelViewHead", "global_average_pool"]
