#!/usr/bin/env bash
# Build the desktop app with anogen.spec (PyInstaller, one folder) and smoke-test it.
#
#   scripts/build_app.sh                 build, then smoke-test dist/anogen-studio/
#   scripts/build_app.sh --test-only     smoke-test an existing build
#
# Environment: PYTHON (default python), SCREENSHOT (default build/smoke/frozen-app.png),
# CLEAN=1 to drop PyInstaller's cache first.
# The smoke test runs the frozen executables, never the source tree: --version on both,
# --selftest on both (imports, model, one generation, one detector step on the CPU) and
# --screenshot of the GUI under xvfb-run when it is installed, else Qt's offscreen platform.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
APP_DIR="dist/anogen-studio"
SCREENSHOT="${SCREENSHOT:-build/smoke/frozen-app.png}"
BUILD=1
case "${1:-}" in
    --test-only) BUILD=0 ;;
    "") ;;
    *) echo "usage: $0 [--test-only]" >&2; exit 2 ;;
esac

step() { printf '\n== %s\n' "$*"; }
fail() { echo "build_app.sh: FAILED: $*" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    if ! "$PYTHON" -c "import PyInstaller" 2>/dev/null; then
        step "installing PyInstaller"
        "$PYTHON" -m pip install "pyinstaller>=6.10"
    fi
    step "building with $("$PYTHON" -m PyInstaller --version) ($(date -u +%H:%M:%S) UTC)"
    start=$(date +%s)
    clean=()
    [ "${CLEAN:-0}" = 1 ] && clean=(--clean)
    "$PYTHON" -m PyInstaller --noconfirm "${clean[@]}" --log-level WARN anogen.spec
    echo "build took $(( $(date +%s) - start )) s"
fi

[ -x "$APP_DIR/anogen" ] && [ -x "$APP_DIR/anogen-studio" ] || fail "no executables in $APP_DIR (build first)"
# The frozen app must not see the source tree or a developer's environment.
unset PYTHONPATH ANOGEN_RESOURCES
cd "$ROOT/$APP_DIR"

step "versions"
expected="$(cd "$ROOT" && "$PYTHON" -c 'import ast,sys; t=ast.parse(open("anogen/__init__.py").read()); print(next(ast.literal_eval(n.value) for n in t.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))')"
for exe in anogen anogen-studio; do
    got="$(./"$exe" --version)"
    echo "$got"
    [ "$got" = "$exe $expected" ] || fail "$exe --version said '$got', expected '$exe $expected'"
done

step "self-test of the CLI executable"
./anogen --selftest || fail "anogen --selftest"

step "self-test of the GUI executable (adds the app's modules)"
QT_QPA_PLATFORM=offscreen ./anogen-studio --selftest || fail "anogen-studio --selftest"

step "screenshot of the GUI"
case "$SCREENSHOT" in /*) shot="$SCREENSHOT" ;; *) shot="$ROOT/$SCREENSHOT" ;; esac
rm -f "$shot"
mkdir -p "$(dirname "$shot")"
if command -v xvfb-run >/dev/null 2>&1; then
    echo "(xvfb-run: the real xcb platform plugin)"
    xvfb-run -a -s "-screen 0 1600x1000x24" ./anogen-studio --screenshot "$shot"
else
    echo "(no xvfb-run: Qt's offscreen platform)"
    QT_QPA_PLATFORM=offscreen ./anogen-studio --screenshot "$shot"
fi
[ -s "$shot" ] || fail "no screenshot at $shot"

step "bundle"
echo "screenshot: $shot"
echo "size: $(du -sh . | cut -f1) in $(find . -type f | wc -l) files ($ROOT/$APP_DIR)"
echo "build_app.sh: OK"
