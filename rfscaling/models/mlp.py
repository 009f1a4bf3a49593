"""A fully connected network with all layers trained, and the antisymmetric doubling.

``MLP``: x (M, D_in) -> h_1 = phi(W_1 x / sqrt(D_in)), h_l = phi(W_l h_{l-1} / sqrt(N)), f = a . h_L / s
with all weights N(0, 1) at init and no biases; s = sqrt(N) in the NTK parameterisation
(lazy as N -> inf: the NTK is fixed) and s = N in the mean-field / muP one (the readout's
1/N scale lets features move at O(1) rate; with the summed loss the NTK is then O(1/N), so a
fixed time horizon needs a learning rate O(N) -- the monitor's time stays gradient-flow time).

``Doubled(net)``: f = g_theta - g_theta' with theta' = theta at init, so f_0 = 0 exactly and
the NTK is twice that of g: the theory's zero-init convention holds for any network.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "PARAMETERIZATIONS", "MLP", "Doubled"]

ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "erf": torch.special.erf,
    "gelu": nn.functional.gelu,
}
PARAMETERIZATIONS = ("ntk", "mean_field")


class MLP(nn.Module):
    """``depth`` hidden layers of width ``width`` (see the module docstring); weights drawn from
    ``generator``."""

    def __init__(self, input_dim: int, width: int, depth: int = 1, activation: str = "relu",
                 parameterization: str = "ntk", *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: must be one of {'|'.join(ACTIVATIONS)}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization={parameterization!r}: must be one of {'|'.join(PARAMETERIZATIONS)}")
        if min(input_dim, width, depth) < 1:
            raise ValueError(f"input_dim={input_dim}, width={width}, depth={depth}: must be >= 1")
        self.activation, self.parameterization = activation, parameterization
        fan_in = [input_dim] + [width] * (depth - 1)
        self.hidden = nn.ParameterList(
            nn.Parameter(torch.randn(width, d, generator=generator, dtype=dtype, device=device)) for d in fan_in)
        self.readout = nn.Parameter(torch.randn(width, generator=generator, dtype=dtype, device=device))
        self.readout_scale = math.sqrt(width) if parameterization == "ntk" else float(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.readout.dtype)
        act = ACTIVATIONS[self.activation]
        for W in self.hidden:
            h = act(h @ W.T / math.sqrt(W.shape[1]))
        return h @ self.readout / self.readout_scale


class Doubled(nn.Module):
    """f = g_theta(x) - g_theta'(x), theta' a copy of theta at construction (f_0 = 0)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.plus = net
        self.minus = copy.deepcopy(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plus(x) - self.minus(x)
