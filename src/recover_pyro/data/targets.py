"""Target standardisation, inverted for every reported number.

RECOVER trained on raw ALMANAC scores (sd ~46) and barely learned; models here fit
:math:`z = (y - \\mu) / \\sigma` and report on the original scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TargetScaler:
    """Affine map between original targets ``y`` and model targets ``z = (y - loc) / scale``.

    Args:
        standardize: if False the map is the identity (``loc = 0``, ``scale = 1``).
    """

    standardize: bool = True
    loc: float = 0.0
    scale: float = 1.0

    def fit(self, y: torch.Tensor) -> "TargetScaler":
        """Set ``loc``/``scale`` to the mean / sd of ``y`` ``(N,)`` (sd 1 when ``N < 2`` or sd is 0)."""
        if self.standardize:
            self.loc = float(y.mean())
            sd = float(y.std()) if y.numel() > 1 else 1.0
            self.scale = sd if sd > 0 else 1.0
        else:
            self.loc, self.scale = 0.0, 1.0
        return self

    def transform(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.loc) / self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Model scale -> original scale (locations and samples)."""
        return z * self.scale + self.loc

    def inverse_scale(self, s: torch.Tensor) -> torch.Tensor:
        """Model scale -> original scale for standard deviations / noise scales."""
        return s * self.scale

    def state_dict(self) -> dict[str, float | bool]:
        return {"standardize": self.standardize, "loc": self.loc, "scale": self.scale}
