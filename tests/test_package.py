"""The package itself: version, typing marker, what a subinterpreter sees."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rustpool
from rustpool import _rustpool
from rustpool._version import __version__ as pure_version

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_crates_version() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    crate_version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert crate_version is not None
    assert rustpool.__version__ == _rustpool.__version__ == pure_version == crate_version.group(1)


def test_py_typed_and_stub_ship_with_the_package() -> None:
    pkg = Path(rustpool.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "_rustpool.pyi").exists()


@pytest.mark.skipif(sys.version_info < (3, 13), reason="own-GIL subinterpreters are used on 3.13+ only")
def test_import_inside_a_subinterpreter_gives_the_names_and_a_clear_error() -> None:
    code = textwrap.dedent(
        """
        import _interpreters
        interp = _interpreters.create()
        _interpreters.run_string(interp, '''
        import rustpool
        assert rustpool.__version__
        try:
            rustpool.CpuExecutor()
        except RuntimeError as e:
            assert "subinterpreter" in str(e), e
        else:
            raise AssertionError("no error")
        ''')
        _interpreters.destroy(interp)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
