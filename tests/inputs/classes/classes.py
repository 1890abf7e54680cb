"""A public class: each call constructs it with the caller's arguments, then calls the
method (DASF's semantics)."""

import numpy as np

__all__ = ["Regridder", "Scaler"]


class Regridder:
    """Regrid fields by a factor."""

    def __init__(self, factor: int, method: str = "mean") -> None:
        """Remember the factor and method.

        Parameters
        ----------
        factor : int
            Coarsening factor along each axis.
        method : str
            "mean" or "max".
        """
        self.factor = factor
        self.method = method

    def coarsen(self, field: np.ndarray) -> np.ndarray:
        """Coarsen a 2-d field."""
        f = self.factor
        blocks = field.reshape(field.shape[0] // f, f, field.shape[1] // f, f)
        return getattr(blocks, self.method)(axis=(1, 3))

    def describe(self) -> str:
        """Say what this regridder does."""
        return f"{self.method} over {self.factor}x{self.factor}"

    @staticmethod
    def methods() -> list[str]:
        """The methods available."""
        return ["mean", "max"]

    @classmethod
    def default_factor(cls, resolution: float) -> int:
        """A class method."""
        return max(1, round(1.0 / resolution))


class Scaler:
    """Constructed with an array: its methods' calls carry it, streamed in chunks."""

    def __init__(self, factors: np.ndarray) -> None:
        self.factors = factors

    def total(self, x: float) -> float:
        """Sum of the factors times x."""
        return float(self.factors.sum() * x)


CASES = [
    ("Regridder.coarsen", ((2,), {}, (np.arange(16.0).reshape(4, 4),)), {}),
    ("Regridder.coarsen", ((2,), {"method": "max"}, (np.arange(16.0).reshape(4, 4),)), {}),
    ("Regridder.describe", ((3,), {}, ()), {}),
    ("Regridder.methods", (None, None, ()), {}),
    ("Regridder.default_factor", (None, None, (0.25,)), {}),
    ("Scaler.total", ((np.arange(5.0),), {}, (2.0,)), {}),
]
