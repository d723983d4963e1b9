"""HTTP rules (SPEC Part 4) end to end: a real app server, a real HTTP upstream, stamped requests."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appserver.app import AppServer
from tests.mitm_helpers import run_app
from tests.peers import Suite, redirect_headers
from tests.relay.test_http import HttpUpstream, http_upstream  # noqa: F401 - a fixture
from tests.rules.test_rules_relay import add, note


def url(app_server: AppServer, path: str) -> str:
    return f"http://127.0.0.1:{app_server.proxy_port}{path}"


def stamped(host: str) -> dict[str, str]:
    return redirect_headers(host, "http")


async def test_respond_without_contacting_the_upstream(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    """respond answers with its status, JSON body and a default Content-Type; the upstream sees nothing;
    ruleMatched carries the method and URL."""
    await add(suite, {"id": "time", "match": {"event": "http", "method": "GET", "path": "/time"},
                      "action": [{"type": "respond", "status": 200, "json": [1700000000000]}, {"type": "notify"}]})
    async with http.get(url(app_server, "/time?x=1"), headers=stamped(http_upstream.host)) as response:
        assert (response.status, await response.json()) == (200, [1700000000000])
        assert response.headers["Content-Type"].startswith("application/json")
    matched = await note(suite, "ruleMatched")
    assert (matched["ruleId"], matched["event"], matched["method"]) == ("time", "http", "GET")
    assert matched["url"] == f"http://{http_upstream.host}/time?x=1"
    assert http_upstream.seen == []
    async with http.post(url(app_server, "/time"), headers=stamped(http_upstream.host)) as response:
        assert response.status == 207  # a POST: the rule's method does not match, so it is forwarded


async def test_a_browsers_preflight_and_the_answers_it_may_read(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    """A CORS preflight matches only rules that name method OPTIONS (else it is forwarded, and the server
    answers it); a rule's answer to a request with an Origin carries the CORS headers a page needs to read
    it, unless the rule set them itself."""
    await add(suite, {"match": {"event": "http", "path": "/time"},
                      "action": {"type": "respond", "status": 400, "json": {"error": {"code": 40000}},
                                 "headers": {"X-Ably-Errorcode": "40000"}}},
              {"match": {"event": "http", "method": "OPTIONS", "path": "/own"},
               "action": {"type": "respond", "status": 204, "headers": {"Access-Control-Allow-Origin": "*"}}},
              {"match": {"event": "http", "path": "/own"},
               "action": {"type": "respond", "status": 200, "headers": {"Access-Control-Allow-Origin": "*"}}})
    page = {**stamped(http_upstream.host), "Origin": "http://page.test"}
    preflight = {**page, "Access-Control-Request-Method": "GET"}
    async with http.options(url(app_server, "/time"), headers=preflight) as response:
        assert response.status == 207  # forwarded: the upstream answered
    assert [seen[0] for seen in http_upstream.seen] == ["OPTIONS"]
    async with http.get(url(app_server, "/time"), headers=page) as response:
        assert response.status == 400
        assert response.headers["Access-Control-Allow-Origin"] == "http://page.test"
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Access-Control-Expose-Headers"] == "X-Ably-Errorcode"
    async with http.get(url(app_server, "/time"), headers=stamped(http_upstream.host)) as response:
        assert response.status == 400 and "Access-Control-Allow-Origin" not in response.headers  # no Origin
    async with http.options(url(app_server, "/own"), headers=preflight) as response:
        assert response.status == 204 and response.headers.getall("Access-Control-Allow-Origin") == ["*"]
    async with http.get(url(app_server, "/own"), headers=page) as response:
        assert response.headers.getall("Access-Control-Allow-Origin") == ["*"]
        assert "Access-Control-Allow-Credentials" not in response.headers
    assert len(http_upstream.seen) == 1


async def test_fields_look_into_a_json_request_body(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    """fields on an http rule match the JSON request body (read first, then forwarded whole when no rule answers)."""
    await add(suite, {"match": {"event": "http", "fields": {"name": "bad", "data.0": 1}},
                      "action": {"type": "respond", "status": 400, "body": "no"}})  # fmt: skip
    headers = {**stamped(http_upstream.host), "Content-Type": "application/json"}
    async with http.post(url(app_server, "/messages"), data=json.dumps({"name": "bad", "data": [1]}),
                         headers=headers) as response:  # fmt: skip
        assert (response.status, await response.text()) == (400, "no")
        assert response.headers["Content-Type"].startswith("text/plain")
    async with http.post(url(app_server, "/messages"), data=json.dumps({"name": "good"}), headers=headers) as response:
        assert response.status == 207
    assert json.loads(http_upstream.seen[-1][3]) == {"name": "good"}


async def test_delay_then_forward(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    await add(suite, {"match": {"event": "http"}, "action": {"type": "delay", "ms": 300}})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(url(app_server, "/late"), headers=stamped(http_upstream.host)) as response:
        assert response.status == 207
    assert loop.time() - started >= 0.3


async def test_drop_reset_and_hang(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    """drop reset closes the client's connection with no response; hang never answers; neither is forwarded."""
    await add(suite, {"match": {"event": "http", "path": "/reset"}, "action": {"type": "drop", "mode": "reset"}},
              {"match": {"event": "http", "path": "/hang"}, "action": {"type": "drop", "mode": "hang"}})
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url(app_server, "/reset"), headers=stamped(http_upstream.host)) as response:
            await response.read()
    with pytest.raises(TimeoutError):
        async with http.get(url(app_server, "/hang"), headers=stamped(http_upstream.host),
                            timeout=aiohttp.ClientTimeout(total=0.5)) as response:  # fmt: skip
            await response.read()
    assert http_upstream.seen == []


async def test_route_replace_and_patch_the_response(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite,  # noqa: F811
    no_leaks: None,
) -> None:  # fmt: skip
    """route sends a request to another host (a fallback, say); replaceResponse and patchResponse change what
    the upstream answered."""
    async def json_answer(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "details": {"n": 1}})

    app = web.Application()
    app.router.add_get("/{tail:.*}", json_answer)
    async with run_app(app) as other_port:
        await add(suite,
                  {"match": {"event": "http", "host": "primary.test"},
                   "action": {"type": "route", "host": f"127.0.0.1:{other_port}", "proto": "http"}},
                  {"match": {"event": "http", "path": "/replace"},
                   "action": {"type": "replaceResponse", "status": 500, "json": {"error": {"code": 50000}}}},
                  {"match": {"event": "http", "path": "/patch"},
                   "action": {"type": "patchResponse", "set": {"details.n": 2, "extra": True}, "unset": ["status"]}})
        async with http.get(url(app_server, "/x"), headers=stamped("primary.test")) as response:
            assert await response.json() == {"status": "ok", "details": {"n": 1}}
        async with http.get(url(app_server, "/replace"), headers=stamped(http_upstream.host)) as response:
            assert (response.status, await response.json()) == (500, {"error": {"code": 50000}})
        assert http_upstream.seen[-1][1] == "/replace"  # forwarded, then replaced
        async with http.get(url(app_server, "/patch"), headers=stamped(f"127.0.0.1:{other_port}")) as response:
            assert await response.json() == {"details": {"n": 2}, "extra": True}


@pytest.mark.parametrize("rule, error", [
    ({"match": {}, "action": {"type": "respond"}}, "'respond' cannot act on message events"),
    ({"match": {"event": "http"}, "action": {"type": "route", "host": "h", "proto": "ws"}},
     "rules[0].action.proto: on http events a route's proto is http or https"),
    ({"match": {}, "action": {"type": "drop", "mode": "hang"}}, "rules[0].action.mode: only an http drop"),
    ({"match": {"method": "GET"}, "action": {"type": "drop"}}, "rules[0].match.method: only http events have it"),
    ({"match": {"event": "http"}, "action": {"type": "respond", "body": "a", "json": 1}},
     "rules[0].action: give one of 'body', 'json' and 'bodyBase64'"),
    ({"match": {"event": "http"}, "action": {"type": "inject", "message": {}}}, "'inject' cannot act on http"),
])  # fmt: skip
async def test_bad_http_rules(suite: Suite, rule: dict[str, Any], error: str) -> None:
    response = await suite.request("addRules", {"rules": [rule]})
    assert response["error"]["code"] == -32602 and error in response["error"]["message"], response


async def test_the_http_dialogue(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    """A transform rule asks transformInterceptedHttpRequest (body in Base64, its ruleId), whose replace
    changes the request; with response: true it then asks transformInterceptedHttpResponse, whose replace
    changes the response."""
    async def on_request(params: dict[str, Any]) -> Any:
        assert base64.b64decode(params["body"]) == b"original"
        return {"action": "replace", "request": {"method": "PUT", "body": "rewritten"}}

    async def on_response(params: dict[str, Any]) -> Any:
        assert params["status"] == 207 and base64.b64decode(params["body"]) == b"plain answer"
        return {"action": "replace", "response": {"status": 201, "json": {"ok": True}}}

    suite.handlers = {"transformInterceptedHttpRequest": on_request, "transformInterceptedHttpResponse": on_response}
    await add(suite, {"id": "t", "match": {"event": "http", "path": "/things"},
                      "action": {"type": "transform", "response": True}})  # fmt: skip
    async with http.post(url(app_server, "/things"), data=b"original", headers=stamped(http_upstream.host)) as r:
        assert (r.status, await r.json()) == (201, {"ok": True})
    [(method, path, _, body)] = http_upstream.seen
    assert (method, path, body) == ("PUT", "/things", b"rewritten")
    first, second = suite.other_requests
    assert (first["method"], first["params"]["ruleId"], first["params"]["method"]) == (
        "transformInterceptedHttpRequest", "t", "POST")  # fmt: skip
    assert second["method"] == "transformInterceptedHttpResponse"
    exchange = first["params"]["connectionID"]  # the exchange's id, the same on both, as in the trace
    assert isinstance(exchange, str) and second["params"]["connectionID"] == exchange


async def test_a_replace_that_echoes_the_headers_keeps_the_request_whole(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    """The suite is shown the headers as the client sent them (Host: the host it meant, not the proxy
    endpoint mitmproxy rewrote it to); a replace that gives them back with a change sends the request where it
    was going, with the body's own length, nothing hop-by-hop from the echo."""
    shown: dict[str, str] = {}

    async def on_request(params: dict[str, Any]) -> Any:
        shown.update(params["headers"])
        return {"action": "replace", "request": {"headers": {**params["headers"], "Connection": "close",
                                                             "X-Added": "1"}, "body": "longer body"}}

    suite.handlers = {"transformInterceptedHttpRequest": on_request}
    await add(suite, {"match": {"event": "http", "path": "/things"}, "action": {"type": "transform"}})
    async with http.post(url(app_server, "/things"), data=b"original", headers=stamped(http_upstream.host)) as r:
        assert r.status == 207
    assert shown["Host"] == http_upstream.host and shown["Content-Length"] == "8"
    [(_, _, headers, body)] = http_upstream.seen
    assert (headers["Host"], headers["X-Added"], body) == (http_upstream.host, "1", b"longer body")
    assert headers["Content-Length"] == str(len(b"longer body")) and headers.get("Connection") != "close"


@pytest.mark.parametrize("answer", ["garbage", {"action": "explode"}, {"action": "replace", "request": "x"}])
async def test_an_unusable_http_answer_passes_the_request_unchanged(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite,  # noqa: F811
    caplog: pytest.LogCaptureFixture, answer: Any,
) -> None:  # fmt: skip
    async def on_request(params: dict[str, Any]) -> Any:
        return answer

    suite.handlers = {"transformInterceptedHttpRequest": on_request}
    await add(suite, {"match": {"event": "http"}, "action": {"type": "transform"}})
    async with http.get(url(app_server, "/x"), headers=stamped(http_upstream.host)) as response:
        assert response.status == 207
    assert any(r.levelname == "ERROR" and "passed on unchanged" in r.getMessage() for r in caplog.records)


async def test_the_suite_may_answer_or_drop_a_request(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream, suite: Suite  # noqa: F811
) -> None:
    async def on_request(params: dict[str, Any]) -> Any:
        if params["url"].endswith("/answer"):
            return {"action": "respond", "response": {"status": 418, "body": "teapot"}}
        return {"action": "drop", "mode": "reset"}

    suite.handlers = {"transformInterceptedHttpRequest": on_request}
    await add(suite, {"match": {"event": "http"}, "action": {"type": "transform"}})
    async with http.get(url(app_server, "/answer"), headers=stamped(http_upstream.host)) as response:
        assert (response.status, await response.text()) == (418, "teapot")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url(app_server, "/drop"), headers=stamped(http_upstream.host)) as response:
            await response.read()
    assert http_upstream.seen == []


async def test_a_body_over_the_limit_streams_and_the_rule_sees_none(
    http: aiohttp.ClientSession, http_upstream: HttpUpstream, no_leaks: None,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A request body over --max-http-body is not held for a fields rule: it streams upstream whole, the rule
    does not match it, and the log says so."""
    from tests.conftest import make_config, running_app_server
    from tests.peers import suite_connection

    async with running_app_server(make_config(max_http_body=1000)) as server, \
            suite_connection(http, server.control_port) as suite:  # fmt: skip
        await suite.request("startInterception", {})
        await add(suite, {"match": {"event": "http", "fields": {"name": "x"}},
                          "action": {"type": "respond", "status": 400}})  # fmt: skip
        big = json.dumps({"name": "x", "pad": "p" * 5000}).encode()
        async with http.post(url(server, "/big"), data=big, headers=stamped(http_upstream.host)) as response:
            assert response.status == 207
        small = json.dumps({"name": "x"}).encode()
        async with http.post(url(server, "/small"), data=small, headers=stamped(http_upstream.host)) as response:
            assert response.status == 400
        other = json.dumps({"name": "y"}).encode()  # read whole for the rule, which does not match: forwarded
        async with http.post(url(server, "/other"), data=other, headers=stamped(http_upstream.host)) as response:
            assert response.status == 207
    assert [seen[3] for seen in http_upstream.seen] == [big, other]
    # both framed as the client sent them (Content-Length), streamed or read whole
    assert [seen[2].get("Content-Length") for seen in http_upstream.seen] == [str(len(big)), str(len(other))]
    assert not [seen for seen in http_upstream.seen if "Transfer-Encoding" in seen[2]]
    assert any("over --max-http-body" in r.getMessage() for r in caplog.records)


async def test_a_response_is_held_only_as_far_as_a_rule_needs_it(
    http: aiohttp.ClientSession, no_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    """A patch over --max-http-body streams on whole and unchanged (the log says the rule did not see it); a
    status edit streams any body with the new status; a gzip body is patched decoded and answered plain; a
    204 has nothing to patch."""
    from tests.conftest import make_config, running_app_server
    from tests.peers import suite_connection

    big = json.dumps({"n": 1, "pad": "p" * 5000}).encode()

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/gzip":
            return web.Response(body=gzip.compress(b'{"n":1}'), headers={"Content-Encoding": "gzip"},
                                content_type="application/json")  # fmt: skip
        if request.path == "/empty":
            return web.Response(status=204)
        return web.Response(body=big, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with run_app(app) as port, running_app_server(make_config(max_http_body=1000)) as server, \
            suite_connection(http, server.control_port) as suite:  # fmt: skip
        await suite.request("startInterception", {})
        await add(suite, {"match": {"event": "http", "path": "/big"}, "action": {"type": "patchResponse", "set": {"n": 2}}},
                  {"match": {"event": "http", "path": "/gzip"}, "action": {"type": "patchResponse", "set": {"n": 2}}},
                  {"match": {"event": "http", "path": "/status"}, "action": {"type": "replaceResponse", "status": 503}},
                  {"match": {"event": "http", "path": "/empty"}, "action": {"type": "patchResponse", "set": {"n": 2}}})
        headers = stamped(f"127.0.0.1:{port}")
        async with http.get(url(server, "/big"), headers=headers) as response:
            assert (response.status, await response.read()) == (200, big)
        assert any("response body over --max-http-body" in r.getMessage() for r in caplog.records)
        async with http.get(url(server, "/status"), headers=headers) as response:
            assert (response.status, await response.read()) == (503, big)
        async with http.get(url(server, "/gzip"), headers=headers, auto_decompress=False) as response:
            assert "Content-Encoding" not in response.headers
            assert await response.json() == {"n": 2}
        async with http.get(url(server, "/empty"), headers=headers) as response:
            assert (response.status, await response.read()) == (204, b"")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # an empty body: nothing to patch


async def test_a_malformed_request_gets_400_and_the_server_goes_on(
    app_server: AppServer, http_upstream: HttpUpstream, http: aiohttp.ClientSession  # noqa: F811
) -> None:
    """Garbage where a request line should be: the client gets 400; the next request is served."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
    writer.write(b"THIS IS NOT HTTP\r\n\r\n")
    head = await asyncio.wait_for(reader.read(100), 5)
    writer.close()
    await writer.wait_closed()
    assert head.split(b" ", 2)[1] == b"400"
    async with http.get(url(app_server, "/after"), headers=stamped(http_upstream.host)) as response:
        assert response.status == 207
