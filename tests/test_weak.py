"""The tau filter of the weak box loss: exactly which pixels contribute."""

import pytest
import torch

from anogen.detection.weak import apply_keep, keep_mask
from anogen.errors import InputError


def _batch():
    # Two 1x1x2x3 samples. Box = the left two columns of each.
    p = torch.tensor([[[[0.05, 0.10, 0.00],
                        [0.50, 0.95, 0.02]]],
                      [[[0.00, 0.30, 0.01],
                        [0.09, 0.11, 0.99]]]])
    box = torch.tensor([[[[1.0, 1.0, 0.0],
                          [1.0, 1.0, 0.0]]]]).repeat(2, 1, 1, 1)
    return p, box


def test_keep_mask_drops_box_pixels_called_normal():
    p, box = _batch()
    keep = keep_mask(p, box, tau=0.9)
    # Inside the box a pixel is kept only when p_anomaly > 0.1 (normal prob < 0.9).
    # p == 0.10 exactly is called normal with probability 0.9 >= tau -> dropped.
    expected = torch.tensor([[[[0.0, 0.0, 1.0],
                               [1.0, 1.0, 1.0]]],
                             [[[0.0, 1.0, 1.0],
                               [0.0, 1.0, 1.0]]]])
    assert keep.dtype == torch.float32
    assert torch.equal(keep, expected)


def test_keep_mask_tau_one_keeps_everything_and_tau_08_keeps_less():
    p, box = _batch()
    assert torch.equal(keep_mask(p, box, tau=1.0), torch.ones_like(p))
    keep_08 = keep_mask(p, box, tau=0.8)
    # threshold p > 0.2: in sample 0 only 0.50 and 0.95 inside the box survive
    assert keep_08[0, 0].tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    assert keep_08[1, 0].tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]


def test_keep_mask_is_detached():
    p, box = _batch()
    p = p.clone().requires_grad_(True)
    keep = keep_mask(p, box, tau=0.9)
    assert not keep.requires_grad


def test_apply_keep_masks_only_weak_samples_and_means_over_all_pixels():
    p, box = _batch()
    keep = keep_mask(p, box, tau=0.9)
    loss = torch.arange(12, dtype=torch.float32).view(2, 1, 2, 3).requires_grad_(True)
    weak = torch.tensor([True, False])
    total = apply_keep(loss, keep, weak)
    # Sample 0 (weak): kept pixels 2,3,4,5 -> 14. Sample 1 (strong): all of 6..11 -> 51.
    assert total.item() == pytest.approx((14 + 51) / 12)
    total.backward()
    expected_grad = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float32).view(2, 1, 2, 3) / 12
    assert torch.equal(loss.grad, expected_grad)

    # weak_all applies the filter to the strong sample too: kept 7, 8, 10, 11 -> 36
    assert apply_keep(loss, keep, weak, weak_all=True).item() == pytest.approx((14 + 36) / 12)
    # No weak sample: plain mean.
    assert apply_keep(loss, keep, torch.tensor([False, False])).item() == pytest.approx(66 / 12)


def test_bad_inputs_fail_clearly():
    p, box = _batch()
    with pytest.raises(InputError, match="tau"):
        keep_mask(p, box, tau=0.0)
    with pytest.raises(InputError, match="shape"):
        keep_mask(p, box[:, :, :1], tau=0.9)
    keep = keep_mask(p, box, tau=0.9)
    with pytest.raises(InputError, match="weak"):
        apply_keep(torch.zeros(2, 1, 2, 3), keep, torch.tensor([True]))
