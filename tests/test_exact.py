"""bbcodec.exact: a user's float network evaluated in exact fixed-point numerics."""
import hashlib
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bbcodec.errors import BBCodecError
from bbcodec.exact import ExactModule, ExactnessError, UnsupportedOperation, exact, exactness_report, supported
from bbcodec.models.fixedpoint import ExactNumerics, quantise, to_grid

GRID = 4096.0

ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "elu": nn.ELU, "silu": nn.SiLU,
    "softplus": nn.Softplus, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}


def mlp(act, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), act(), nn.Linear(32, 32), act(), nn.Linear(32, 5)).eval()


def conv_net(act, seed=0):
    """conv (stride 2) -> act -> conv -> act -> transposed conv back to full size -> act."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), act(),
        nn.Conv2d(8, 8, 3, padding=1), act(),
        nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), act(),
    ).eval()


def assert_on_grid(y):
    assert y.dtype == torch.float64
    units = y * GRID
    assert torch.equal(units, torch.round(units))
    assert units.abs().max() < 2 ** 24


def assert_close(module, *inputs, rel=1e-2):
    report = exactness_report(module, *inputs)
    assert report["max_abs_diff"] <= rel * max(report["max_abs_float"], 1.0), report
    return report


# ------------------------------------------------------------------ accuracy and the grid

@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_mlp_with_each_activation_is_close_to_float_and_on_the_grid(name):
    net = mlp(ACTIVATIONS[name])
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(1))
    y = exact(net)(x)
    assert y.shape == (7, 5)
    assert_on_grid(y)
    report = assert_close(net, x)
    assert report["max_abs_diff"] < 4e-3  # a few grid steps (2**-12 = 2.4e-4) per layer


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_conv_deconv_net_with_each_activation_is_close_to_float_and_on_the_grid(name):
    net = conv_net(ACTIVATIONS[name])
    x = torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    y = exact(net)(x)
    assert y.shape == net(x).shape == (2, 3, 10, 12)
    assert_on_grid(y)
    assert_close(net, x)


class Functional(nn.Module):
    """Every activation through its functional, torch. and method forms, and clamps."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 16)

    def forward(self, x):
        h = self.fc(x)
        return (F.relu(h), torch.relu(h), h.relu(), F.leaky_relu(h, 0.2), F.elu(h, alpha=0.5),
                F.silu(h), F.softplus(h, beta=2.0, threshold=3.0), torch.tanh(h), h.tanh(), torch.sigmoid(h),
                h.sigmoid(), F.relu6(h * 4), F.hardtanh(h, -0.5, 0.25), h.clamp(min=-0.3), torch.clamp(h, max=0.1))


def test_functional_forms_match_float():
    net = Functional().eval()
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(3)) * 2
    out = exact(net)(x)
    assert isinstance(out, tuple) and len(out) == 15
    for y in out:
        assert_on_grid(y)
    assert_close(net, x)


def test_nonlinearity_tables_are_correctly_rounded_over_the_grid():
    """Tanh, sigmoid, SiLU, softplus and ELU on every grid point of [-24, 24] (and far outside)
    equal the correctly rounded value of the math library's function."""
    u = torch.cat([torch.arange(-24 * 4096, 24 * 4096 + 1, 7), torch.tensor([-(2 ** 24) + 1, -(2 ** 20), 2 ** 20,
                                                                           2 ** 24 - 1])]).double()
    x = (u / GRID).tolist()
    cases = {
        nn.Tanh(): math.tanh, nn.Sigmoid(): lambda v: 0.5 * (1 + math.tanh(v / 2)),
        nn.SiLU(): lambda v: v * 0.5 * (1 + math.tanh(v / 2)),
        nn.Softplus(): lambda v: v if v > 20 else max(v, 0) + math.log1p(math.exp(-abs(v))),
        nn.ELU(0.7): lambda v: v if v > 0 else 0.7 * math.expm1(v),
    }
    for module, f in cases.items():
        got = exact(module)(u / GRID) * GRID
        want = torch.tensor([round(f(v) * GRID) for v in x], dtype=torch.float64)
        mismatch = (got != want).nonzero()
        assert mismatch.numel() == 0, (module, [(x[i], got[i].item()) for i in mismatch[:3, 0]])


def test_nonlinearity_tables_are_fixed():
    """The tables are a pure function of the code (IEEE basic operations): their bits are pinned."""
    from bbcodec.exact import _table

    pinned = {("sigmoid", ()): (-36909, 36909, "816fae4fbb1c7fec"), ("tanh", ()): (-19874, 19874, "eed00615ec2f4cdf"),
              ("silu", ()): (-46895, 46895, "a60e2b3a17599dfd"),
              ("softplus", (("beta", 1.0), ("threshold", 20.0))): (-36909, 36909, "74d39cfa7dfb465e"),
              ("elu", (("alpha", 1.0),)): (-36909, -64, "a95d0843d055e745")}
    for (name, params), (lo, hi, digest) in pinned.items():
        table = _table(name, params)
        assert (table.lo, table.hi) == (lo, hi)
        assert hashlib.sha256(table.values.numpy().tobytes()).hexdigest()[:16] == digest, name


def test_linear_and_conv_are_bit_identical_to_exact_numerics():
    """Same quantisation and sums as the built-in networks' ExactNumerics."""
    torch.manual_seed(4)
    num = ExactNumerics()
    lin, conv = nn.Linear(10, 7), nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x, xi = torch.randn(6, 10), torch.randn(2, 3, 9, 8)
    assert torch.equal(exact(lin)(x), num.value(num.linear(lin, num.input(to_grid(x)))))
    assert torch.equal(exact(nn.Sequential(lin, nn.ReLU()))(x),
                       num.value(num.linear(lin, num.input(to_grid(x)), relu=True)))
    assert torch.equal(exact(conv)(xi), num.value(num.conv(conv, num.input(to_grid(xi)))))


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(stride=2, padding=1, output_padding=1),
                                dict(stride=1, padding=0), dict(stride=3, padding=2, output_padding=2, dilation=2),
                                dict(stride=(2, 1), padding=(0, 1), groups=2), dict(stride=2, bias=False)])
def test_conv_transpose2d_matches_functional(kw):
    """The exact transposed convolution is F.conv_transpose2d (float64, same quantised weights)
    rounded once to the grid, and close to the float layer."""
    torch.manual_seed(5)
    layer = nn.ConvTranspose2d(4, 6, (4, 3), **kw).eval()
    x = torch.randn(2, 4, 5, 6)
    y = exact(layer)(x)
    w = quantise(layer.weight.detach().double(), 12, 2.0 ** 16) / GRID
    b = None if layer.bias is None else quantise(layer.bias.detach().double(), 12, 2.0 ** 24) / GRID
    ref = F.conv_transpose2d(to_grid(x), w, b, layer.stride, layer.padding, layer.output_padding, layer.groups,
                             layer.dilation)
    assert y.shape == ref.shape == layer(x).shape
    assert_on_grid(y)
    assert (y - ref).abs().max() <= 0.5 / GRID + 1e-9
    assert (y - layer(x).double()).abs().max() < 5e-3


def test_conv_transpose2d_output_size_and_unbatched_input():
    torch.manual_seed(6)

    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(x, output_size=[x.size(2) * 2, x.size(3) * 2])

    net = Up().eval()
    x = torch.randn(1, 3, 4, 5)
    assert exact(net)(x).shape == (1, 2, 8, 10)
    assert_close(net, x)
    assert torch.equal(exact(net.up)(x[0]), exact(net.up)(x)[0])


def test_conv2d_variants_match_float():
    torch.manual_seed(7)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=4, dilation=2, padding=2), nn.ReLU(),
        nn.Conv2d(8, 4, (1, 2), stride=(1, 2), bias=False), nn.MaxPool2d(2),
    ).eval()
    assert_close(net, torch.randn(2, 3, 12, 12))


# ------------------------------------------------------------------ determinism

def test_same_bits_for_batch_of_one_and_of_seven():
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(8))
    xi = torch.randn(7, 3, 10, 12, generator=torch.Generator().manual_seed(9))
    for net, inp in ((exact(mlp(nn.SiLU)), x), (exact(conv_net(nn.Tanh)), xi)):
        whole = net(inp)
        rows = torch.cat([net(inp[i:i + 1]) for i in range(7)])
        assert torch.equal(whole, rows)
        assert torch.equal(net(inp[2:5]), whole[2:5])


DIGEST_IN_SUBPROCESS = r"""
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
sys.path.insert(0, sys.argv[2])
print(__import__("test_exact").output_digest())
"""


def output_digest() -> str:
    """sha256 of the exact outputs of both test networks on inputs large enough to be threaded."""
    g = torch.Generator().manual_seed(10)
    x, xi = torch.randn(256, 6, generator=g), torch.randn(8, 3, 24, 24, generator=g)
    h = hashlib.sha256()
    for net, inp in ((mlp(nn.Softplus), x), (conv_net(nn.SiLU), xi)):
        h.update(exact(net)(inp).numpy().tobytes())
    return h.hexdigest()


def test_same_bits_with_one_and_two_threads():
    """One thread in a fresh process, two threads here: the same bits."""
    here = str(Path(__file__).parent)
    r = subprocess.run([sys.executable, "-c", DIGEST_IN_SUBPROCESS, "1", here], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        here_digest = output_digest()
    finally:
        torch.set_num_threads(threads)
    assert r.stdout.strip() == here_digest


def test_same_bits_on_cpu_and_cuda(device):
    if device.type != "cuda":
        pytest.skip("needs CUDA")
    net = conv_net(nn.Sigmoid)
    x = torch.randn(4, 3, 16, 16)
    cpu = exact(net)(x)
    assert torch.equal(exact(net.to(device))(x.to(device)).cpu(), cpu)


def test_inference_mode_and_parameter_updates():
    net = mlp(nn.Tanh)
    em = exact(net)
    assert em.float_module is net
    x = torch.randn(3, 6)
    with torch.inference_mode():
        a = em(x)
    b = em(x)
    assert torch.equal(a, b)
    with torch.no_grad():
        net[0].weight.mul_(0.5)  # in place: re-quantised at the next call
    c = em(x)
    assert not torch.equal(b, c)
    assert_close(net, x)
    net[4].weight = nn.Parameter(torch.zeros_like(net[4].weight))  # replaced
    net[4].bias = nn.Parameter(torch.full_like(net[4].bias, 0.25))
    assert torch.equal(em(x), torch.full((3, 5), 0.25, dtype=torch.float64))


# ------------------------------------------------------------------ structure

class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.act(self.conv1(x))
        return torch.add(x, self.conv2(h)) * 0.5 + x / 4


class ShapeOps(nn.Module):
    """Chunk, cat, view, permute, slicing, flatten/unflatten, nearest upsampling, constants."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.unflat = nn.Unflatten(1, (4, 4, 4))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.scale = nn.Parameter(torch.linspace(-1, 1, 4).view(1, 4, 1, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        y = torch.cat([b, a * 1.5 - 0.25], 1).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        n = x.shape[0]
        y = y.reshape(n, -1).view(n, 4, x.size(2), -1)
        y = self.unflat(self.flat(y[:, :, :4, :4]))
        z = F.interpolate(y, scale_factor=2) + self.up(y) / 3
        parts = torch.split(z, [1, 3], dim=1)
        w = torch.cat(parts[::-1], dim=1).transpose(2, 3)[..., 1:]
        return w * self.scale + 1 - x.mean([2, 3], keepdim=True), [parts[0], z.sum(1)]


def test_nested_sequential_and_residual_blocks():
    torch.manual_seed(11)
    inner = nn.Sequential(ResBlock(4), nn.Sequential(ResBlock(4), nn.SiLU()))
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), inner, nn.Identity(), nn.Dropout(0.3)).eval()
    x = torch.randn(2, 3, 8, 8)
    y = exact(net)(x)
    assert_on_grid(y)
    assert_close(net, x)


def test_shape_operations_and_output_structure():
    net = ShapeOps().eval()
    x = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(12))
    out = exact(net)(x)
    ref = net(x)
    assert isinstance(out, tuple) and isinstance(out[1], list)
    for a, b in zip([out[0], *out[1]], [ref[0], *ref[1]]):
        assert a.shape == b.shape
        assert_on_grid(a)
    assert exactness_report(net, x)["max_abs_diff"] < 5e-3


class ParamsAndInPlace(nn.Module):
    """Parameters and buffers in arithmetic, indexing and concatenation; in-place operations."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.offset = nn.Parameter(torch.tensor([0.1, -0.2, 0.3, 0.05]))
        self.gain = nn.Parameter(torch.tensor([1.5, -0.5, 2.0, 0.25]))
        self.register_buffer("pick", torch.tensor([3, 0, 0]))

    def forward(self, x):
        h = self.fc(x)
        h.relu_()  # later uses of h see the mutation
        g = h * self.gain - self.offset
        g += h
        return torch.cat([g, self.offset - h, h[:, self.pick]], 1), h


def test_parameters_buffers_and_in_place_operations():
    torch.manual_seed(13)
    net = ParamsAndInPlace().eval()
    x = torch.randn(5, 3)
    out, h = exact(net)(x)
    assert out.shape == (5, 11) and (h >= 0).all()
    assert_on_grid(out)
    assert exactness_report(net, x)["max_abs_diff"] < 3e-3


class Encoder(nn.Module):
    """A VAE encoder as people write them: conv stack, view by batch size, linear, chunk, dict."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.ELU())
        self.fc = nn.Linear(16 * 7 * 7, 2 * 8)

    def forward(self, x):
        h = self.convs(x)
        mean, log_scale = self.fc(h.view(h.size(0), -1)).chunk(2, dim=-1)
        return {"mean": mean, "log_scale": log_scale}


class Decoder(nn.Module):
    """Two inputs, a parameter matrix, upsampling by size, padding, pooling, stack and mean."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 16 * 7 * 7) / 4)
        self.deconvs = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.Softplus(), nn.ConvTranspose2d(8, 1, 4, 2, 1))

    def forward(self, z, shift):
        h = F.silu(z @ self.w + shift).view(-1, 16, 7, 7)
        h = F.pad(F.interpolate(h, size=(14, 14)), (1, 1, 1, 1), mode="reflect")[..., 1:-1, 1:-1]
        out = torch.sigmoid(self.deconvs(F.max_pool2d(h, 2)))
        return torch.stack([out, out * out - 0.5], 0).mean((0, 2))


def test_vae_style_encoder_and_decoder():
    torch.manual_seed(14)
    enc, dec = Encoder().eval(), Decoder().eval()
    x, z, shift = torch.rand(3, 1, 28, 28), torch.randn(3, 8), torch.randn(1, 784)
    out = exact(enc)(x)
    assert set(out) == {"mean", "log_scale"} and out["mean"].shape == (3, 8)
    assert_close(enc, x)
    y = exact(dec)(z, shift)
    assert y.shape == (3, 28, 28) and y.std() > 0.01
    assert_close(dec, z, shift)


def test_arithmetic_rounds_half_to_even():
    class Arith(nn.Module):
        def forward(self, x):
            return x * 0.5, x / 2, x * x, -x + 2 ** -13, 1 - x

    u = torch.arange(-6, 7, dtype=torch.float64)
    x = u / GRID
    half, div, sq, shifted, rsub = exact(Arith())(x)
    want = torch.round(u * 0.5) / GRID  # ties to even: 1.5 -> 2, 2.5 -> 2
    assert torch.equal(half, want) and torch.equal(div, want)
    assert torch.equal(sq, torch.round(u * u / GRID) / GRID)
    assert torch.equal(shifted, torch.round(-u + 0.5) / GRID)
    assert torch.equal(rsub, 1 - x)


def test_inputs_are_rounded_to_the_grid_and_clamped():
    y = exact(nn.Identity())(torch.tensor([1e-9, 0.5 / GRID, 1.5 / GRID, 1e6, -1e6], dtype=torch.float32))
    assert y.tolist() == [0.0, 0.0, 2 / GRID, (2 ** 24 - 1) / GRID, -(2 ** 24 - 1) / GRID]


# ------------------------------------------------------------------ errors

class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)
        self.bn1 = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn1(self.conv(x))


class Sorts(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values


@pytest.mark.parametrize("net, name, node", [
    (WithBatchNorm(), "torch.nn.BatchNorm2d", "bn1"),
    (nn.Sequential(nn.Linear(3, 3), nn.GELU()), "torch.nn.GELU", "_1"),
    (Sorts(), "torch.sort", "sort"),
])
def test_unsupported_operations_are_named(net, name, node):
    with pytest.raises(UnsupportedOperation) as info:
        exact(net)
    message = str(info.value)
    assert f"unsupported operation {name} (node '{node}'" in message
    assert "supported:" in message and "Linear" in message
    assert isinstance(info.value, BBCodecError)
    assert "torch.nn.Linear" in supported()["modules"]


def test_unsupported_uses_are_explained():
    class DividesByActivation(nn.Module):
        def forward(self, x):
            return 1 / x

    class FloatUpsample(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=1.5)

    class Bilinear(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="bilinear")

    for net, words in ((DividesByActivation(), "division by a Python number"), (FloatUpsample(), "integer scale"),
                       (Bilinear(), "'bilinear'")):
        with pytest.raises(UnsupportedOperation, match=words):
            exact(net)


def test_data_dependent_control_flow_is_a_clear_error():
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            if h.sum() > 0:
                return h
            return -h

    with pytest.raises(UnsupportedOperation, match="control flow") as info:
        exact(Branches())
    assert "Branches" in str(info.value) and "test_exact.py" in str(info.value)


def test_fan_in_above_the_exactness_bound_is_refused():
    with pytest.raises(ExactnessError, match="fan-in 4096"):
        exact(nn.Linear(4096, 2))
    with pytest.raises(ExactnessError, match="fan-in"):
        exact(nn.Sequential(nn.Conv2d(256, 4, 3)))
    exact(nn.ConvTranspose2d(512, 4, 4, stride=2))  # 512 x 2 x 2 overlapping taps = 2048: allowed
    with pytest.raises(ExactnessError):
        exact(nn.ConvTranspose2d(512, 4, 3, stride=1))


def test_clipped_weights_warn():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight[0, 0] = 40.0
    with pytest.warns(UserWarning, match="clipped"):
        exact(lin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact(nn.Linear(2, 2))


def test_wrong_inputs():
    em = exact(nn.Linear(2, 2))
    assert isinstance(em, ExactModule)
    with pytest.raises(TypeError, match="expected 1 input"):
        em(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="NaN"):
        em(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(TypeError):
        exact(lambda x: x)


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil", [(3, 16, 3, 1, 1, 1), (16, 8, 3, 2, 1, 1), (5, 7, 1, 1, 0, 1), (6, 4, 3, 1, 0, 1),
                                                        (4, 6, 5, 1, 2, 2)])
@pytest.mark.parametrize("chunk_bytes", [1 << 20, 8 * 16 * 7])
def test_cpu_convolution_equals_the_explicit_im2col_path(cin, cout, k, stride, pad, dil, chunk_bytes, monkeypatch):
    """The CPU paths (a product per tap, in column chunks of any size, or torch's float64
    convolution for strides) and the explicit im2col + matrix product used on other devices give
    identical sums, at activations near the range limit."""
    from bbcodec.models import fixedpoint
    from bbcodec.models.fixedpoint import ACT_LIMIT, ExactNumerics, conv2d_im2col, conv2d_units

    monkeypatch.setattr(fixedpoint, "CHUNK_BYTES", chunk_bytes)

    g = torch.Generator().manual_seed(cin * cout + k)
    layer = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil)
    w, b = ExactNumerics()._weights(layer)
    x = torch.round((torch.rand(3, cin, 19, 17, generator=g, dtype=torch.float64) * 2 - 1) * (ACT_LIMIT - 1))
    args = (x, w, b, layer.weight.shape, layer.stride, layer.padding, layer.dilation)
    assert torch.equal(conv2d_units(*args), conv2d_im2col(*args))


@pytest.mark.parametrize("cin,cout,h,w", [(48, 16, 7, 5), (8, 48, 9, 12), (3, 4, 1, 1)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1 << 20, 8 * 64 * 7])
def test_polyphase_upsampled_convolution_equals_upsampling_then_convolving(cin, cout, h, w, relu, chunk_bytes,
                                                                           monkeypatch):
    """``upsample_conv`` on the CPU (four 2x2 convolutions of the input, phase weights summed)
    gives exactly the values of a 3x3 convolution of the 2x-upsampled input, at activations near
    the range limit and with weights near theirs (phase sums up to four times the limit)."""
    from bbcodec.models import fixedpoint
    from bbcodec.models.fixedpoint import ACT_LIMIT, ExactNumerics, upsample2

    monkeypatch.setattr(fixedpoint, "CHUNK_BYTES", chunk_bytes)
    g = torch.Generator().manual_seed(cin * cout + h)
    layer = torch.nn.Conv2d(cin, cout, 3, padding=1)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=g) * 2 - 1) * 15.9)
        layer.bias.copy_(torch.rand(cout, generator=g) * 100)
    x = torch.round((torch.rand(3, cin, h, w, generator=g, dtype=torch.float64) * 2 - 1) * (ACT_LIMIT - 1))
    num = ExactNumerics()
    assert torch.equal(num.upsample_conv(layer, x, relu), num.conv(layer, upsample2(x), relu))
