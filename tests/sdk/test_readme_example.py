"""The README's "Writing a test" example, run verbatim as a newcomer's project would run it.

Its Python blocks are copied out of README.md — the block with the ``ably`` fixture into a ``conftest.py``,
the tests into a test file — in a directory of their own with an empty pytest configuration (no
``asyncio_mode``, no fixtures of this repository), and pytest runs there in a child process with the
installed plugin, against an app server in direct mode in front of the fake Ably server and the real
ably-js. Nothing is added to what the README shows but the command line it gives.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from appserver.app import AppServer
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import direct, fake  # noqa: F401 - fixtures are found by name

ROOT = Path(__file__).parents[2]


def readme_blocks() -> list[str]:
    """The ```python blocks of the README's "Writing a test" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Writing a test", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_shows_a_fixture_and_tests() -> None:
    blocks = readme_blocks()
    assert sum("@pytest.fixture" in block for block in blocks) == 1
    assert sum(len(re.findall(r"^async def test_", block, re.M)) for block in blocks) == 3


async def test_the_readmes_example_runs_as_written(direct: AppServer, fake: FakeAbly, tmp_path: Path) -> None:
    blocks = readme_blocks()
    project = tmp_path / "newcomer"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")  # nothing of this repository's configuration
    (project / "conftest.py").write_text("\n\n".join(b for b in blocks if "@pytest.fixture" in b))
    (project / "test_from_readme.py").write_text("\n\n".join(b for b in blocks if "@pytest.fixture" not in b))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--interception-mode", "none",
        "--interception-url", f"ws://127.0.0.1:{direct.control_port}/",
        "--interception-proxy-endpoint", f"127.0.0.1:{direct.proxy_port}",
        cwd=project, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    report = out.decode()
    assert proc.returncode == 0, report
    assert re.search(r"\b3 passed\b", report), report


@pytest.mark.parametrize("option", ["--interception-proxy-endpoint", "--interception-mode"])
def test_the_options_the_readme_names_exist(option: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    plugin = (ROOT / "shared" / "pytest_plugin.py").read_text(encoding="utf-8")
    assert option in readme and f'"{option}"' in plugin
