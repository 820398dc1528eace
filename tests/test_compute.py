"""The compute policy: threads and CPU precision chosen in one place."""

import pytest
import torch

from anogen import compute
from anogen.compute import apply_policy, resolve_policy
from anogen.errors import InputError


def test_threads_default_to_every_core_unless_pinned(monkeypatch):
    monkeypatch.delenv(compute.THREADS_ENV, raising=False)
    assert resolve_policy("cpu").threads == compute.available_cores()
    monkeypatch.setenv(compute.THREADS_ENV, "3")
    assert resolve_policy("cpu").threads == 3
    assert resolve_policy("cpu", threads=2).threads == 2  # the user's choice wins


@pytest.mark.parametrize("bad", ["0", "many"])
def test_a_bad_pinned_thread_count_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv(compute.THREADS_ENV, bad)
    with pytest.raises(InputError, match=compute.THREADS_ENV):
        resolve_policy("cpu")


def test_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    monkeypatch.setattr(compute, "cpu_has_fast_bf16", lambda: False)
    slow = resolve_policy("cpu", threads=1)
    assert not slow.bf16_autocast and "no native bf16" in slow.describe()
    monkeypatch.setattr(compute, "cpu_has_fast_bf16", lambda: True)
    assert resolve_policy("cpu", threads=1).bf16_autocast
    assert not resolve_policy("cpu", threads=1, precision="fp32").bf16_autocast
    assert not resolve_policy("cuda", threads=1).bf16_autocast  # GPUs use their own dtype


def test_autocast_context_runs_a_matmul_in_bf16_only_when_chosen(monkeypatch):
    a = torch.randn(4, 4)
    monkeypatch.setattr(compute, "cpu_has_fast_bf16", lambda: True)
    with resolve_policy("cpu", threads=1).autocast():
        assert (a @ a).dtype == torch.bfloat16
    with resolve_policy("cpu", threads=1, precision="fp32").autocast():
        assert (a @ a).dtype == torch.float32


def test_apply_sets_torch_threads_and_bad_values_are_refused():
    before = torch.get_num_threads()
    try:
        apply_policy(resolve_policy("cpu", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(InputError):
        resolve_policy("cpu", threads=0)
    with pytest.raises(InputError):
        resolve_policy("cpu", precision="fp8")
