"""The public API as type checkers see it, on every Python version ``make test`` runs:
``examples/typed_usage.py`` (every public name, results pinned with ``assert_type``) passes
``mypy --strict`` and basedpyright (pyright's standard rules), the package itself passes
``mypy --strict``, the native module's stub matches the built module (``mypy.stubtest``), and
wrong calls are reported by both checkers, each on its line, so the checks are not vacuous
(rustpool's ``__init__`` chooses its star import at run time; a checker must see the real API)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rustpool

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "typed_usage.py"

pytest.importorskip("mypy", reason="mypy (requirements-dev.txt) checks the typed example")


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module's runs: the standard library and rustpool are analysed once."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def basedpyright(*files: Path) -> dict[str, object]:
    """basedpyright's JSON report on ``files``, under this repository's pyproject.toml
    (``typeCheckingMode = "standard"``) and this interpreter's packages."""
    exe = shutil.which("basedpyright", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip(f"basedpyright (requirements-dev.txt) is not installed next to {sys.executable}")
    out = subprocess.run(
        [exe, "--outputjson", "--project", str(ROOT), "--pythonpath", sys.executable, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr  # 1: errors found; more: it failed
    report: dict[str, object] = json.loads(out.stdout)
    return report


def pyright_errors(report: dict[str, object], file: Path | None = None) -> list[tuple[int, str, str]]:
    """(1-based line, rule, message) of each error (in ``file``, if given)."""
    diagnostics = report["generalDiagnostics"]
    assert isinstance(diagnostics, list)
    return [
        (d["range"]["start"]["line"] + 1, d.get("rule", ""), d["message"])
        for d in diagnostics
        if d["severity"] == "error" and (file is None or Path(d["file"]) == file)
    ]


def test_the_typed_example_passes_mypy_strict(mypy_cache: Path) -> None:
    out = mypy(mypy_cache, str(EXAMPLE))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_passes_mypy_strict(mypy_cache: Path) -> None:
    out = mypy(mypy_cache, "-p", "rustpool")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_passes_basedpyright() -> None:
    report = basedpyright(Path(rustpool.__file__).parent)
    assert pyright_errors(report) == [], json.dumps(report, indent=1)


def test_the_typed_example_passes_basedpyright() -> None:
    report = basedpyright(EXAMPLE)
    assert pyright_errors(report) == [], json.dumps(report, indent=1)
    assert report["summary"]["filesAnalyzed"] == 1  # type: ignore[index]


def test_the_typed_example_uses_every_public_name() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rustpool"
    }
    assert set(rustpool.__all__) - used == set()


def test_the_native_stub_matches_the_built_module(tmp_path: Path) -> None:
    # Run elsewhere than the repository: stubtest must find the installed package (the built
    # module beside its stub), and its cache stays out of the tree.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "rustpool._rustpool",
            "--allowlist",
            str(ROOT / "stubtest-allowlist.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# Wrong code, one mistake per snippet, on the line marked `# wrong`: each checker reports an error
# there and nowhere else.
WRONG = {
    "run_cpu_argument_type": (
        'await rustpool.run_cpu(double, "two")  # wrong',
        'Argument 2 to "run_cpu" has incompatible type "str"; expected "int"',
        'Argument of type "Literal[\'two\']" cannot be assigned to parameter "x" of type "int"',
    ),
    "to_thread_argument_type": (
        'await rustpool.to_thread(double, "x")  # wrong',
        'Argument 2 to "to_thread" has incompatible type "str"; expected "int"',
        'Argument of type "Literal[\'x\']" cannot be assigned to parameter "x" of type "int"',
    ),
    "to_thread_too_many_arguments": (
        "await rustpool.to_thread(double, 1, 2)  # wrong",
        'Too many arguments for "to_thread"',
        "Expected 1 positional argument",
    ),
    "submit_too_many_arguments": (
        "rustpool.ThreadExecutor().submit(double, 1, 2)  # wrong",
        'Too many arguments for "submit"',
        "Expected 1 positional argument",
    ),
    "options_run_keyword": (
        "await rustpool.CpuExecutor().options(timeout=1).run(double, y=1)  # wrong",
        'Unexpected keyword argument "y" for "run" of "CallOptions"',
        'No parameter named "y"',
    ),
    "isolation_literal": (
        'rustpool.CpuExecutor(isolation="bogus")  # wrong',
        'Argument "isolation" to "CpuExecutor" has incompatible type "Literal[\'bogus\']"; '
        "expected \"Literal['auto', 'thread', 'interpreter', 'process']\"",
        'Argument of type "Literal[\'bogus\']" cannot be assigned to parameter "isolation" of type "IsolationMode"',
    ),
    "fallback_literal": (
        'rustpool.configure(fallback="quiet")  # wrong',
        'Argument "fallback" to "configure" has incompatible type "Literal[\'quiet\']"; '
        "expected \"Literal['warn', 'error']\"",
        'Argument of type "Literal[\'quiet\']" cannot be assigned to parameter "fallback" of type "FallbackPolicy"',
    ),
    "chunksize_literal": (
        'rustpool.CpuExecutor().map(double, [1], chunksize="big")  # wrong',
        'Argument "chunksize" to "map" of "CpuExecutor" has incompatible type "Literal[\'big\']"',
        'Argument of type "Literal[\'big\']" cannot be assigned to parameter "chunksize"',
    ),
    "settings_key": (
        'rustpool.settings()["workers"]  # wrong',
        'TypedDict "Settings" has no key "workers"',
        '"workers" is not a defined key in "Settings"',
    ),
    "result_type": (
        "result = await rustpool.to_thread(double, 1)\ntext: str = result  # wrong",
        'Incompatible types in assignment (expression has type "int", variable has type "str")',
        'Type "int" is not assignable to declared type "str"',
    ),
}


def wrong_snippet(directory: Path, name: str) -> tuple[Path, int]:
    """The snippet as a module, and the line of its mistake."""
    body = WRONG[name][0]
    source = textwrap.dedent(
        """\
        import rustpool


        def double(x: int) -> int:
            return 2 * x


        async def main() -> None:
        """
    ) + textwrap.indent(body, "    ") + "\n"
    path = directory / f"wrong_{name}.py"
    path.write_text(source)
    line = next(i for i, text in enumerate(source.splitlines(), 1) if text.endswith("# wrong"))
    return path, line


@pytest.mark.parametrize("name", sorted(WRONG))
def test_mypy_reports_wrong_code(tmp_path: Path, mypy_cache: Path, name: str) -> None:
    path, line = wrong_snippet(tmp_path, name)
    out = mypy(mypy_cache, str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [e for e in out.stdout.splitlines() if ": error: " in e]
    assert errors, out.stdout
    assert all(e.startswith(f"{path}:{line}: error: ") for e in errors), out.stdout
    assert WRONG[name][1] in out.stdout


@pytest.fixture(scope="module")
def pyright_on_wrong_code(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One basedpyright run over every snippet (each run starts node and reads typeshed)."""
    directory = tmp_path_factory.mktemp("wrong")
    return directory, basedpyright(*(wrong_snippet(directory, name)[0] for name in WRONG))


@pytest.mark.parametrize("name", sorted(WRONG))
def test_basedpyright_reports_wrong_code(pyright_on_wrong_code: tuple[Path, dict[str, object]], name: str) -> None:
    directory, report = pyright_on_wrong_code
    path, line = wrong_snippet(directory, name)
    errors = pyright_errors(report, path)
    assert errors, f"no error reported for {WRONG[name][0]!r}"
    assert {at for at, _, _ in errors} == {line}, errors
    assert any(WRONG[name][2] in message for _, _, message in errors), errors
