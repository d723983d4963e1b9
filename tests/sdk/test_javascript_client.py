"""The JavaScript client (shared/js, SPEC Part 7) proven with real parts: its mocha suite (tests/js/client/)
covers the seed's private-API list against the real ably-js from npm, in JSON and msgpack, each test in a
session of its own (the mocha plugin); a failing test's trace files are written and named in its failure;
the TypeScript declarations pass tsc --strict for a user's test file; the package packs and installs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from appserver.app import AppServer
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import direct, fake  # noqa: F401 - fixtures are found by name

ROOT = Path(__file__).parents[2]
JS = ROOT / "tests" / "js"
CLIENT = ROOT / "shared" / "js"


async def run(*argv: str, cwd: Path, env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env={"PATH": os.environ["PATH"], **env},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def mocha_env(server: AppServer, fake: FakeAbly, **extra: str) -> dict[str, str]:
    return {"INTERCEPTION_CONTROL_URL": f"ws://127.0.0.1:{server.control_port}/",
            "INTERCEPTION_UPSTREAM": f"ws://{fake.host}/", **extra}  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_the_seeds_needs_in_mocha_against_real_ably_js(direct: AppServer, fake: FakeAbly, fmt: str,
                                                              tmp_path: Path) -> None:  # fmt: skip
    code, out = await run(str(JS / "node_modules" / ".bin" / "mocha"), "--require", "ably-interception-client/mocha",
                          "--timeout", "15000", "--reporter", "dot", "client/needs.test.mjs", cwd=JS,
                          env=mocha_env(direct, fake, FORMAT=fmt, INTERCEPTION_TRACE_DIR=str(tmp_path)))
    assert code == 0, out
    assert re.search(r"\b17 passing\b", out), out
    assert not list(tmp_path.iterdir()), "a passing test wrote a trace"


async def test_a_failing_tests_trace_is_written_and_named_in_its_failure(direct: AppServer, fake: FakeAbly,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    code, out = await run(str(JS / "node_modules" / ".bin" / "mocha"), "--require", "ably-interception-client/mocha",
                          "client/failing.test.mjs", cwd=JS,
                          env=mocha_env(direct, fake, INTERCEPTION_TRACE_DIR=str(tmp_path)))
    assert code == 1, out
    jsonl = tmp_path / "a_failing_test_expects_an_ACK_the_proxy_drops.jsonl"
    har = jsonl.with_suffix(".har")
    assert f"the proxy's trace of this test: {jsonl} (and {har})" in out, out
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    dropped = [e for e in events if e["kind"] == "frame" and e.get("action") == "ACK"]
    assert dropped and all(e["decision"] == "drop" for e in dropped)
    entries = json.loads(har.read_text())["log"]["entries"]
    messages = [m for entry in entries for m in entry.get("_webSocketMessages", [])]
    assert any(m.get("_delivered") is False for m in messages)


async def test_with_session_for_node_test(direct: AppServer, fake: FakeAbly) -> None:
    code, out = await run("node", "--test", "client/node_test.test.mjs", cwd=JS, env=mocha_env(direct, fake))
    assert code == 0, out
    assert "# pass 3" in out and "# fail 0" in out, out


async def test_with_a_window_the_javascript_client_answers_what_came_together_in_one_write(
    direct: AppServer, fake: FakeAbly
) -> None:
    """tests/js/client/cork.test.mjs: eight requests that came in one read are answered in one write with a window
    of 8, and in eight (each at once) with window 1; the socket's writes counted in Node."""
    code, out = await run("node", "--test", "client/cork.test.mjs", cwd=JS, env=mocha_env(direct, fake))
    assert code == 0, out
    assert "# pass 2" in out and "# fail 0" in out, out


async def test_the_declarations_pass_tsc_strict_for_a_users_test_file() -> None:
    code, out = await run(str(JS / "node_modules" / ".bin" / "tsc"), "-p", "client/tsconfig.json", cwd=JS, env={})
    assert code == 0, out
    code, out = await run(str(CLIENT / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json", cwd=CLIENT, env={})
    assert code == 0, out


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_the_browser_bundle_in_chromium_beside_ably_js(direct: AppServer, fake: FakeAbly, fmt: str) -> None:
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is needed (scripts/system-deps installs Debian's)")
    code, out = await run("node", "client/browser_runner.mjs", cwd=JS, timeout=120,
                          env={"CONTROL_URL": f"ws://127.0.0.1:{direct.control_port}/", "UPSTREAM": f"ws://{fake.host}/",
                               "FORMAT": fmt})  # fmt: skip
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"format": fmt, "heartbeats": "true", "attach": 10, "heldAtOnce": "attaching",
                      "bundle": "browser.mjs", "pageErrors": []}, result  # fmt: skip


def test_the_browser_bundle_imports_nothing() -> None:
    bundle = (CLIENT / "dist" / "browser.mjs").read_text()
    assert not re.search(r"^\s*import\b|\bimport\s*\(|\bfrom\s+[\"']", bundle, re.M), "the bundle imports something"
    assert "export {" in bundle or "export{" in bundle


async def test_esm_and_commonjs_share_one_error_class() -> None:
    script = ("const cjs = require('ably-interception-client'); "
              "import('ably-interception-client').then((esm) => { "
              "const mocha = require('ably-interception-client/mocha'); "
              "if (esm.InterceptionError !== cjs.InterceptionError) throw new Error('two classes'); "
              "if (typeof mocha.mochaHooks.beforeEach !== 'function') throw new Error('no hooks'); "
              "console.log('one class'); })")  # fmt: skip
    code, out = await run("node", "-e", script, cwd=JS, env={})
    assert code == 0 and "one class" in out, out


async def test_npm_pack_gives_a_tarball_that_installs_anywhere(tmp_path: Path) -> None:
    code, out = await run("npm", "pack", "--pack-destination", str(tmp_path), "--loglevel=error", cwd=CLIENT,
                          env={"HOME": os.environ.get("HOME", str(tmp_path))}, timeout=180)
    assert code == 0, out
    [tarball] = tmp_path.glob("ably-interception-client-*.tgz")
    project = tmp_path / "elsewhere"
    project.mkdir()
    (project / "package.json").write_text('{"name": "elsewhere", "private": true, "type": "module"}\n')
    code, out = await run("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", str(tarball), cwd=project,
                          env={"HOME": os.environ.get("HOME", str(tmp_path))}, timeout=300)  # fmt: skip
    assert code == 0, out
    script = ("import { rules, connect } from 'ably-interception-client'; import fs from 'node:fs'; "
              "console.log(JSON.stringify(rules.drop({ action: 'ACK' })), typeof connect, "
              "fs.existsSync('node_modules/ably-interception-client/dist/browser.mjs'))")  # fmt: skip
    code, out = await run("node", "--input-type=module", "-e", script, cwd=project, env={})
    assert code == 0, out
    assert out.split() == ['{"match":{"action":"ACK"},"action":{"type":"drop"}}', "function", "true"], out


@pytest.mark.parametrize("example", ["needs.test.mjs", "node_test.test.mjs", "typed.test.ts", "browser.html"])
def test_the_javascript_guide_shows_the_tested_files(example: str) -> None:
    """docs/javascript.md's examples are the files these tests run, word for word."""
    guide = (ROOT / "docs" / "javascript.md").read_text()
    assert (JS / "client" / example).read_text() in guide, f"docs/javascript.md differs from tests/js/client/{example}"


def test_the_readmes_javascript_example_is_from_the_tested_suite() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```js\n", 1)[1].split("```", 1)[0]
    suite = (JS / "client" / "needs.test.mjs").read_text()
    for part in block.split("\n\n"):
        assert part.strip() in suite, f"the README's JavaScript example is not in tests/js/client/needs.test.mjs:\n{part}"
