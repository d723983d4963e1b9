"""SPEC Part 9, installs: ``pip install <checkout>`` (not only ``-e``) gives a working package. The wheel is
built from the checkout, installed with its dependencies in a clean venv, and ``python -m appserver doctor``
run from outside the checkout proves interception end to end (a real mitmdump) with the installed code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def product_packages() -> set[str]:
    """Every package of the checkout's product code, dotted (appserver.rules, shared, …)."""
    return {".".join(init.parent.relative_to(ROOT).parts)
            for top in ("appserver", "redirector", "shared") for init in (ROOT / top).rglob("__init__.py")
            if "node_modules" not in init.parts}  # fmt: skip


def test_the_wheel_installs_a_working_package_in_a_clean_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {".".join(Path(name).parent.parts) for name in archive.namelist() if name.endswith("/__init__.py")}
    assert product_packages() <= packaged, f"missing from the wheel: {sorted(product_packages() - packaged)}"
    assert not any(name.startswith("tests") for name in packaged)

    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)  # noqa: SLF001
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert install.returncode == 0, install.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(python), "-c", "import appserver.rules, appserver.trace, appserver.doctor; "
                            "print(appserver.__file__)"], cwd=outside, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the installed code, not the checkout's
    doctor = subprocess.run([str(python), "-m", "appserver", "doctor"], cwd=outside, capture_output=True, text=True,
                            timeout=120, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "interception works in proxy mode" in doctor.stdout
