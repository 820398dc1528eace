"""The compute policy: threads and CPU precision chosen in one place."""

import os
import subprocess
import sys

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


# ----------------------------------------------------------------------------- the CLI


COMMANDS_THAT_RUN_TORCH = ("learn", "generate", "train", "evaluate", "predict", "export", "run")  # `demo` had it first


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", COMMANDS_THAT_RUN_TORCH)
def test_every_command_that_runs_torch_takes_threads(command):
    from anogen.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    options = {s for action in subparsers.choices[command]._actions for s in action.option_strings}
    assert "--threads" in options


def test_train_threads_sets_torch_threads_and_prints_the_policy_once(tmp_path, capsys, restore_threads):
    from anogen.cli import main
    from anogen.data.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "data", categories=("fabric",), size=32, seed=1, train_good=2, test_good=1,
                       test_per_kind=1)
    tiny = ["--set", "image_size=32", "--set", "batch_size=2", "--set", "recon_base_width=4",
            "--set", "disc_base_width=4"]
    argv = ["train", "--data", str(tmp_path / "data" / "fabric"), "--detector", "draem", "--steps", "1",
            "--device", "cpu", *tiny]
    torch.set_num_threads(2)
    assert main([*argv, "--threads", "1", "--out", str(tmp_path / "a")]) == 0
    assert torch.get_num_threads() == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("anogen: compute:")]
    assert lines == [f"anogen: compute: {resolve_policy('cpu', threads=1).describe()}"]
    assert lines[0].startswith("anogen: compute: cpu, 1 thread, ")
    # A bad count is a user mistake: exit 2, one line, before any training.
    assert main([*argv, "--threads", "0", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "anogen: error: --threads must be 1 or more, got 0"


def test_the_policy_line_is_printed_unless_quiet(capsys, restore_threads):
    from anogen.cli import build_parser
    from anogen.compute import apply_command_policy

    parser = build_parser()
    apply_command_policy(parser.parse_args(["predict", "--detector-dir", "m", "x.png", "--out", "o",
                                            "--threads", "1"]), "cpu")
    assert capsys.readouterr().err.startswith("anogen: compute: cpu, 1 thread, ")
    apply_command_policy(parser.parse_args(["predict", "--detector-dir", "m", "x.png", "--out", "o",
                                            "--threads", "1", "--quiet"]), "cpu")
    assert capsys.readouterr().err == ""


def test_a_command_without_threads_uses_every_core(monkeypatch, restore_threads):
    from anogen.cli import build_parser
    from anogen.compute import apply_command_policy

    monkeypatch.delenv(compute.THREADS_ENV, raising=False)
    args = build_parser().parse_args(["evaluate", "--data", "d", "--detector-dir", "m", "--quiet"])
    assert args.threads is None
    policy = apply_command_policy(args, "cpu")
    assert policy.threads == compute.available_cores() == torch.get_num_threads()


def test_thread_choices_start_automatic_and_end_at_every_core():
    assert compute.thread_choices(1) == (compute.THREADS_AUTOMATIC, 1)
    assert compute.thread_choices(6) == (compute.THREADS_AUTOMATIC, 1, 2, 4, 6)
    assert compute.thread_choices(8) == (compute.THREADS_AUTOMATIC, 1, 2, 4, 8)
    assert [compute.threads_from_setting(v) for v in (0, "0", -3, "junk", None, 3, "2")] == \
        [None, None, None, None, None, 3, 2]


def test_train_prints_the_cpu_precision_it_was_asked_for(capsys, restore_threads):
    from anogen.cli import build_parser
    from anogen.compute import apply_command_policy

    parser = build_parser()
    base = ["train", "--detector", "draem", "--data", "d", "--out", "o", "--threads", "1"]
    args = parser.parse_args([*base, "--cpu-precision", "bf16"])
    assert args.cpu_precision == "bf16"
    assert apply_command_policy(args, "cpu").bf16_autocast
    assert "bf16 autocast" in capsys.readouterr().err
    args = parser.parse_args([*base, "--cpu-precision", "fp32"])
    assert not apply_command_policy(args, "cpu").bf16_autocast


def _wait_policy_seen_by_torch(entry: str, env: dict[str, str]) -> str:
    """The OMP_WAIT_POLICY a process started through ``entry``'s main() hands on, and that
    torch (imported after main() ran) was loaded under."""
    code = (f"import os, sys\nfrom {entry} import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "import torch\nprint(os.environ.get('OMP_WAIT_POLICY', 'unset'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("entry", ["anogen.cli", "app.main"])
def test_entry_points_make_openmp_threads_sleep_unless_the_user_chose(entry):
    # Spinning OpenMP threads made a 2-thread step 8-10x slower beside one busy process.
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _wait_policy_seen_by_torch(entry, base) == "PASSIVE"
    assert _wait_policy_seen_by_torch(entry, {**base, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_the_policy_record_names_the_openmp_wait_policy(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert resolve_policy("cpu", threads=1).to_json()["openmp_wait"] == "passive"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert resolve_policy("cpu", threads=1).to_json()["openmp_wait"] == "default"
