"""The book's models: no BatchNorm, no dropout, so the measured Hessian is the trained one.

* :class:`MLP` — fully connected, width/depth/activation as arguments.
* :class:`SmallCNN` — two 3×3 convolutions and a linear read-out for 8×8 images.
* :class:`LeNetCNN` — conv-pool-conv-pool and two linear layers for 32×32×3 images, about
  500,000 parameters: the size of the paper's CNN (its Figure 6).
* :class:`Transformer` — a small pre-LayerNorm decoder-only Transformer with causal attention
  through ``scaled_dot_product_attention`` (the HVP code forces its math backend).
* :class:`Quadratic` — the 1-D quadratic f(θ) = a θ² / 2 (its output is the loss itself).

:func:`build_model` builds any of them by name with validated arguments.

**"Another machine" switch.** With the environment variable ``ADAM_SPIKES_PERTURB`` set to a
relative size such as ``1e-12``, every model the book builds (:func:`build_model`, and chapter
9's language model through :func:`perturb_initial`) has its initial parameters multiplied by
``1 + s·ξ`` (ξ standard normal, drawn under a fixed seed, so a perturbed run is reproducible).
A spike's timing is chaotic: this changes a run's trajectory after a few hundred steps as another
CPU, BLAS or thread count would, while its first steps agree within a tolerance. ``make test``
runs every chapter once under it (see the README).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from utils.validation import check_choice, check_number

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    """x (batch, in_dim) -> (batch, out_dim); ``depth`` hidden layers of ``width`` units.

    ``init_exponent`` None: PyTorch's default initialisation; a number γ: every parameter drawn
    from N(0, σ²) with σ = width^(−γ), as the paper initialises its fully connected networks."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 100, depth: int = 1,
                 activation: str = "tanh", init_exponent: float | None = None):
        super().__init__()
        check_number("in_dim", in_dim, low=1, integer=True)
        check_number("out_dim", out_dim, low=1, integer=True)
        check_number("width", width, low=1, integer=True)
        check_number("depth", depth, low=1, integer=True)
        act = ACTIVATIONS[check_choice("activation", activation, ACTIVATIONS)]
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), act()]
            d = width
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        if init_exponent is not None:
            # the paper's initialisation (Appendix E): every weight and bias ~ N(0, σ²) with
            # σ = width^(−init_exponent): 0.4 and 1 in its Figure 4, 0.5 (variance 1/m) in Figure 5
            check_number("init_exponent", init_exponent, low=0, high=4)
            std = float(width) ** -float(init_exponent)
            with torch.no_grad():
                for p in self.parameters():
                    p.normal_(0.0, std)

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Images (batch, 1, 8, 8) -> (batch, n_classes): conv3×3-act-conv3×3-act-linear."""

    def __init__(self, channels: int = 8, n_classes: int = 10, activation: str = "tanh",
                 image_size: int = 8):
        super().__init__()
        check_number("channels", channels, low=1, integer=True)
        check_number("n_classes", n_classes, low=1, integer=True)
        check_number("image_size", image_size, low=5, integer=True)
        act = ACTIVATIONS[check_choice("activation", activation, ACTIVATIONS)]
        side = image_size - 4
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3), act(), nn.Conv2d(channels, channels, 3), act(),
            nn.Flatten(), nn.Linear(channels * side * side, n_classes))

    def forward(self, x):
        return self.net(x)


class LeNetCNN(nn.Module):
    """Images (batch, in_channels, image_size, image_size) -> (batch, n_classes):
    conv3×3(in→c1, padding 1)-act-maxpool2-conv3×3(c1→c2, padding 1)-act-maxpool2-
    linear(c2·(image_size/4)²→hidden)-act-linear(hidden→n_classes), PyTorch's default
    initialisation. The defaults (32, 64, 120 on 32×32×3) have 512,242 parameters, about the
    paper's "approximately 500,000" (its Appendix E gives no layers)."""

    def __init__(self, channels: tuple = (32, 64), hidden: int = 120, n_classes: int = 10,
                 in_channels: int = 3, image_size: int = 32, activation: str = "relu"):
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels must be two numbers (c1, c2), got {channels!r}")
        c1, c2 = (check_number("channels", c, low=1, integer=True) for c in channels)
        check_number("hidden", hidden, low=1, integer=True)
        check_number("n_classes", n_classes, low=1, integer=True)
        check_number("in_channels", in_channels, low=1, integer=True)
        check_number("image_size", image_size, low=4, integer=True)
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        act = ACTIVATIONS[check_choice("activation", activation, ACTIVATIONS)]
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c2 * side * side, hidden), act(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + MLP(LN(x)); the MLP's hidden width is ``d_ff``
    (default 4 d_model)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Token ids (batch, seq_len) -> outputs (batch, out_dim) read at the last position.
    ``d_ff``: the blocks' MLP width (None: 4 d_model; the anchor-function models of Zhang et
    al. use 3 d_model, 1,200 at d_model = 400)."""

    def __init__(self, vocab_size: int, seq_len: int, out_dim: int, d_model: int = 16,
                 n_heads: int = 2, n_layers: int = 1, d_ff: int | None = None):
        super().__init__()
        check_number("vocab_size", vocab_size, low=2, integer=True)
        check_number("seq_len", seq_len, low=1, integer=True)
        check_number("out_dim", out_dim, low=1, integer=True)
        check_number("d_model", d_model, low=1, integer=True)
        check_number("n_heads", n_heads, low=1, integer=True)
        check_number("n_layers", n_layers, low=1, integer=True)
        if d_ff is not None:
            check_number("d_ff", d_ff, low=1, integer=True)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) / math.sqrt(d_model))
        self.blocks = nn.Sequential(*[Block(d_model, n_heads, d_ff) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        x = self.ln_f(self.blocks(x))
        return self.head(x[:, -1])


class Quadratic(nn.Module):
    """f(θ) = a θ² / 2 with one scalar parameter θ; ``forward`` ignores its input."""

    def __init__(self, curvature: float = 1.0, theta0: float = 1.0):
        super().__init__()
        self.curvature = check_number("curvature", curvature, low=0, low_open=True)
        check_number("theta0", theta0)
        self.theta = nn.Parameter(torch.tensor([float(theta0)], dtype=torch.float64))  # exact θ_1

    def forward(self, _inputs=None):
        return 0.5 * self.curvature * (self.theta ** 2).sum()


MODELS = {"mlp": MLP, "cnn": SmallCNN, "lenet": LeNetCNN, "transformer": Transformer, "quadratic": Quadratic}


def build_model(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float64,
                **kwargs) -> nn.Module:
    """Build model ``name`` (one of :data:`MODELS`) with parameters drawn under ``seed``
    (and perturbed when the switch ``ADAM_SPIKES_PERTURB`` is on: :func:`perturb_initial`)."""
    cls = MODELS[check_choice("model", name, MODELS)]
    check_number("seed", seed, low=0, integer=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**kwargs)
    return perturb_initial(model.to(dtype), seed)


PERTURB_ENV = "ADAM_SPIKES_PERTURB"
"""The environment variable of the "another machine" switch (see the module docstring)."""
PERTURB_MAX = 1e-3
"""The largest relative size the switch accepts: it imitates rounding, not a new seed."""
_PERTURB_SEED = 20_250_604
"""Offset of the seed the perturbation is drawn under (a model of seed s uses this + s)."""


def perturbation_scale() -> float:
    """The relative size s of the switch: 0.0 when ``ADAM_SPIKES_PERTURB`` is unset, empty or
    0; ValueError naming the variable and the allowed range for anything else than a number in
    [0, :data:`PERTURB_MAX`]."""
    raw = os.environ.get(PERTURB_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not 0.0 <= scale <= PERTURB_MAX:
        raise ValueError(f"{PERTURB_ENV} must be a relative size in [0, {PERTURB_MAX:g}] "
                         f"(for example 1e-12), got {raw!r}")
    return scale


def perturb_initial(model: nn.Module, seed: int, scale: float | None = None) -> nn.Module:
    """Multiply every parameter of ``model`` in place by ``1 + r·ξ`` and return it: ξ standard
    normal under the seed ``_PERTURB_SEED + seed``, r = max(``scale``, the parameter dtype's
    machine epsilon), so that a float32 parameter moves by about one unit in the last place
    rather than not at all. ``scale`` None reads the switch (:func:`perturbation_scale`); 0
    leaves the model as it is."""
    scale = perturbation_scale() if scale is None else float(scale)
    if scale == 0.0:
        return model
    gen = torch.Generator().manual_seed(_PERTURB_SEED + int(seed))
    with torch.no_grad():
        for p in model.parameters():
            r = max(scale, torch.finfo(p.dtype).eps)
            xi = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.copy_((p.double() * (1.0 + r * xi)).to(p.dtype))
    return model
