import pytest
import torch

from tumorseg.models import UNet
from tumorseg.models.unet import count_parameters


def expected_params(cin: int, base: int, depth: int) -> int:
    """Hand count: conv3x3 without bias + BN (2 per channel), twice per block."""

    def block(a: int, b: int) -> int:
        return a * b * 9 + 2 * b + b * b * 9 + 2 * b

    widths = [base * 2**i for i in range(depth + 1)]
    total, c = 0, cin
    for w in widths[:-1]:
        total += block(c, w)
        c = w
    total += block(widths[-2], widths[-1])
    for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
        total += w_low * w * 4 + w  # transposed conv 2x2 with bias
        total += block(2 * w, w)
    return total + widths[0] + 1  # 1x1 head with bias


@pytest.mark.parametrize(("cin", "base", "depth", "size"), [(3, 16, 4, 128), (1, 8, 3, 64), (3, 4, 2, 32)])
def test_shapes_and_parameter_count(cin, base, depth, size):
    model = UNet(cin, 1, base, depth)
    out = model(torch.randn(2, cin, size, size))
    assert out.shape == (2, 1, size, size)
    assert count_parameters(model) == expected_params(cin, base, depth)


def test_default_model_size():
    assert count_parameters(UNet(3, 1, 16, 4)) == 1_942_577


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = UNet(3, 1, 4, 2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shuffle_ups_compute_the_same_function():
    """The export's ConvTranspose -> 1x1 conv + pixel shuffle rewrite changes no output."""
    from tumorseg.export import ShuffleUp, with_shuffle_ups

    torch.manual_seed(0)
    model = UNet(3, 1, base=8, depth=3).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    rewritten = with_shuffle_ups(model)
    assert all(isinstance(up, ShuffleUp) for up in rewritten.ups)
    assert all(isinstance(up, torch.nn.ConvTranspose2d) for up in model.ups)  # the original is untouched
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x), atol=1e-5, rtol=1e-5)


def test_deep_supervision_heads_see_coarser_decoder_outputs():
    from tumorseg.models.unet import DeepSupervision

    torch.manual_seed(0)
    net = UNet(3, 1, 4, 3).eval()
    wrapped = DeepSupervision(net).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, aux = wrapped(x)
    torch.testing.assert_close(logits, net(x))  # the U-Net's own output, unchanged
    assert [a.shape[-1] for a in aux] == [16, 8]  # 1/2 then 1/4; none at the bottleneck
    assert all(a.shape[:2] == (2, 1) for a in aux)
    # the heads are the wrapper's own: the U-Net's parameters and state keys do not change
    assert set(net.state_dict()) == set(UNet(3, 1, 4, 3).state_dict())
    assert count_parameters(wrapped) == count_parameters(net) + (8 + 1) + (16 + 1)
