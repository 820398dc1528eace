"""Packaging: the PyInstaller spec's inputs and the self-test the frozen app runs.

The build itself takes many minutes and is not part of the suite (``scripts/build_app.sh``
builds and smoke-tests it); these tests check what can break it cheaply: the spec parses,
every repository path and entry point it uses exists, its version is the package's, its
file filters and excludes keep what the library loads, and ``python -m anogen.selftest``
passes with a tiny model.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import anogen

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "anogen.spec"


@pytest.fixture(scope="module")
def spec() -> dict:
    """The spec's constants and helpers, run without PyInstaller (its build part is skipped)."""
    source = SPEC.read_text(encoding="utf-8")
    ast.parse(source, filename=str(SPEC))
    namespace: dict = {"__file__": str(SPEC)}
    exec(compile(source, str(SPEC), "exec"), namespace)
    assert "SPECPATH" not in namespace and "coll" not in namespace  # nothing was built
    return namespace


def test_spec_names_paths_and_entry_points_that_exist(spec):
    for key, relative in spec["REPO_PATHS"].items():
        assert (ROOT / relative).exists(), f"anogen.spec needs {relative} ({key})"
    scripts = spec["entry_points"](ROOT)
    assert {spec["GUI_SCRIPT"], spec["CLI_SCRIPT"]} <= set(scripts)
    for name, (module, function) in scripts.items():
        module_file = ROOT / (module.replace(".", "/") + ".py")
        assert module_file.is_file(), f"entry point {name}: no {module_file}"
        tree = ast.parse(module_file.read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), \
            f"entry point {name}: {module} has no {function}()"


def test_launcher_calls_the_entry_point(spec, tmp_path):
    launcher = spec["write_launcher"](tmp_path / "launchers", "anogen", "anogen.cli", "main")
    assert launcher.stem == "launch-anogen"  # never "anogen": it would shadow the package
    written = launcher.stat().st_mtime_ns
    os.utime(launcher, ns=(written - 10**9, written - 10**9))
    spec["write_launcher"](tmp_path / "launchers", "anogen", "anogen.cli", "main")
    assert launcher.stat().st_mtime_ns == written - 10**9  # unchanged: PyInstaller's cache stays valid
    result = subprocess.run([sys.executable, str(launcher), "--version"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"anogen {anogen.__version__}"


def test_version_is_read_from_the_package(spec, tmp_path):
    assert spec["read_version"](ROOT) == anogen.__version__
    # It reads the file, not a number written into the spec.
    (tmp_path / "anogen").mkdir()
    (tmp_path / "anogen" / "__init__.py").write_text('"""x"""\n\n__version__ = "9.8.7"\n')
    assert spec["read_version"](tmp_path) == "9.8.7"
    assert anogen.__version__ not in SPEC.read_text(encoding="utf-8")


def test_resources_are_collected_with_their_layout(spec, tmp_path):
    model = tmp_path / "resources" / "models" / "demo-ldm"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"0")
    (tmp_path / "resources" / "icons").mkdir()
    (tmp_path / "resources" / "icons" / "app.png").write_bytes(b"0")
    datas = spec["resource_datas"](tmp_path)
    assert sorted((Path(src).relative_to(tmp_path).as_posix(), Path(dest).as_posix()) for src, dest in datas) == [
        ("resources/icons/app.png", "resources/icons"),
        ("resources/models/demo-ldm/model_index.json", "resources/models/demo-ldm"),
        ("resources/models/demo-ldm/unet/diffusion_pytorch_model.safetensors", "resources/models/demo-ldm/unet"),
    ]
    assert spec["resource_datas"](tmp_path / "nowhere") == []

    # Whatever the repository ships under resources/ goes into the bundle.
    shipped = {p for p in (ROOT / "resources").rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and p.name != ".gitkeep"} if (ROOT / "resources").is_dir() else set()
    assert {Path(src) for src, _ in spec["resource_datas"](ROOT)} == shipped


def test_file_filter_keeps_the_qt_plugins_a_widget_app_needs(spec):
    keep = spec["keep_file"]
    plugins = "PySide6/Qt/plugins"
    assert keep((f"{plugins}/platforms/libqxcb.so", "", "BINARY"))
    assert keep((f"{plugins}/platforms/libqoffscreen.so", "", "BINARY"))
    assert keep((f"{plugins}/imageformats/libqjpeg.so", "", "BINARY"))
    assert keep(("PySide6/plugins/platforms/qwindows.dll", "", "BINARY"))  # Windows wheel layout
    assert not keep(("PySide6/plugins/sqldrivers/qsqlite.dll", "", "BINARY"))
    assert not keep(("PySide6/translations/qtbase_de.qm", "", "DATA"))
    assert not keep((f"{plugins}/platforms/libqeglfs.so", "", "BINARY"))  # embedded devices only
    assert not keep((f"{plugins}/platforms/libqminimalegl.so", "", "BINARY"))
    assert not keep((f"{plugins}/sqldrivers/libqsqlite.so", "", "BINARY"))
    assert not keep((f"{plugins}/qmltooling/libqmldbg_debugger.so", "", "BINARY"))
    assert not keep(("PySide6/Qt/translations/qtbase_de.qm", "", "DATA"))
    assert not keep(("torch/lib/libtorchbind_test.so", "", "BINARY"))
    assert not keep(("torch/include/ATen/ATen.h", "", "DATA"))
    assert not keep(("torch/bin/protoc", "", "BINARY"))
    assert keep(("torch/bin/torch_shm_manager", "", "BINARY"))  # import torch needs it
    assert not keep(("torch/test/Dict_test", "", "BINARY"))
    assert keep(("torch/lib/libtorch_cpu.so", "", "BINARY"))
    assert keep(("qtawesome/fonts/materialdesignicons6-webfont-6.9.96.ttf", "", "DATA"))


def test_excludes_never_name_the_library_or_its_direct_dependencies(spec):
    excluded = set(spec["EXCLUDED_MODULES"])
    needed = {"anogen", "app", "torch", "diffusers", "transformers", "PySide6", "qtawesome", "qtpy", "cv2",
              "numpy", "PIL", "safetensors", "onnx", "onnxruntime", "tokenizers", "huggingface_hub", "tqdm"}
    assert not excluded & needed
    assert "torchvision" in excluded  # the project never depends on it
    assert {"auto", "clip", "bert", "resnet"} <= spec["KEEP_TRANSFORMERS_MODELS"]
    assert {"latent_diffusion", "stable_diffusion"} <= spec["KEEP_DIFFUSERS_PIPELINES"]
    for package, folder in (("transformers", "models"), ("diffusers", "pipelines")):
        names = spec["subpackages"](package, folder)
        assert len(names) > 10, f"cannot list {package}.{folder}: nothing would be excluded"


def test_check_imports_names_a_broken_module(tmp_path, monkeypatch):
    from anogen.selftest import check_imports, package_modules

    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fine.py").write_text("VALUE = 1\n")
    (package / "broken.py").write_text("import a_module_that_is_not_installed\n")
    (package / "__main__.py").write_text("raise SystemExit('the self-test must never run __main__')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_modules("brokenpkg") == ["brokenpkg", "brokenpkg.broken", "brokenpkg.fine"]
    with pytest.raises(RuntimeError, match=r"1 of 3 modules failed: brokenpkg\.broken \(ModuleNotFoundError"):
        check_imports(["brokenpkg"])
    for name in [m for m in sys.modules if m.startswith("brokenpkg")]:
        monkeypatch.delitem(sys.modules, name)


def test_selftest_passes_with_a_tiny_model_and_loads_only_kept_model_families(spec, tmp_path):
    """``python -m anogen.selftest --tiny-model`` in a fresh interpreter: exit code 0, one
    PASS line per check, and every transformers model family / diffusers pipeline it
    loaded is one the spec keeps (else the frozen app would fail where this passed)."""
    modules_file = tmp_path / "modules.json"
    code = textwrap.dedent(f"""
        import json, runpy, sys
        sys.argv = ["anogen.selftest", "--tiny-model"]
        try:
            runpy.run_module("anogen.selftest", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        json.dump(sorted(sys.modules), open({str(modules_file)!r}, "w"))
        sys.exit(code)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=180)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("imports", "model", "generate", "detector"):
        assert any(line.startswith(f"PASS {check}:") for line in lines), result.stdout
    assert "tiny random model" in result.stdout
    assert lines[-1].startswith("selftest: PASS, 4/4")
    assert "Loading weights" not in result.stderr  # progress bars are off

    loaded = json.loads(modules_file.read_text())
    for prefix, kept in (("transformers.models.", spec["KEEP_TRANSFORMERS_MODELS"]),
                         ("diffusers.pipelines.", spec["KEEP_DIFFUSERS_PIPELINES"])):
        families = {name[len(prefix):].split(".")[0] for name in loaded if name.startswith(prefix)}
        packages = {f for f in families if importlib.util.find_spec(prefix + f).submodule_search_locations}
        assert packages <= kept, (f"the self-test loaded {sorted(packages - kept)} under {prefix}, "
                                  "which the spec excludes")


def test_app_and_cli_answer_version_and_offer_selftest(capsys):
    from anogen.cli import build_parser as cli_parser
    from app.main import build_parser as app_parser

    with pytest.raises(SystemExit) as exit_info:
        app_parser().parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"anogen-studio {anogen.__version__}"
    assert app_parser().parse_args(["--selftest"]).selftest
    assert cli_parser().parse_args(["--selftest"]).selftest
