"""Fuzzing every JSON route of a running server: schemathesis over its OpenAPI document, plus
depth, size and type mutations of our own for the routes the document does not describe (the
ComfyUI routes on both listeners) and for the WebSocket. Shared by ``tests/server/test_fuzz.py``
(bounded) and ``bench/fuzz.py`` (longer, prints its counts).

Every answer is counted by route family and status; an answer >= 500 (or no answer) is a
failure, kept with the request that caused it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import requests
import websockets

MAIN_JSON_ROUTES = [
    ("POST", "/api/v1/functions/tasks"),
    ("POST", "/api/v1/functions/batches"),
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/projects"),
    ("PUT", "/api/v1/projects/demo/takes/active"),
    ("PUT", "/api/v1/projects/demo/canvases/fuzz"),
]
COMFY_JSON_ROUTES = ["/prompt", "/queue", "/history", "/interrupt"]
COMFY_GET_ROUTES = [
    "/prompt", "/queue", "/history", "/history/{id}", "/view", "/object_info",
    "/object_info/{id}", "/system_stats", "/models", "/models/{id}", "/embeddings",
    "/extensions", "/features",
]  # fmt: skip
FORM = "application/x-www-form-urlencoded"


@dataclass
class FuzzReport:
    """Answers by family, route and status; failures (>= 500 or no answer) with their request."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, family: str, route: str, status: int, request: str = "") -> None:
        self.statuses[(family, status)] += 1
        self.routes[(family, route)] += 1
        if status >= 500 or status == 0:
            self.failures.append(f"{family} {route} -> {status or 'no answer'} {request[:300]}")

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500 or status == 0)

    def summary(self) -> str:
        lines = [f"requests: {self.requests}, answers >= 500 or none: {self.server_errors}"]
        families = sorted({f for f, _ in self.statuses})
        for family in families:
            total = sum(n for (f, _), n in self.statuses.items() if f == family)
            histogram = ", ".join(
                f"{status}: {n}" for (f, status), n in sorted(self.statuses.items()) if f == family
            )
            lines.append(f"  {family}: {total} requests ({histogram})")
            for (f, route), n in sorted(self.routes.items()):
                if f == family:
                    lines.append(f"      {n:5d}  {route}")
        lines += [f"  FAILURE {f}" for f in self.failures[:50]]
        return "\n".join(lines)


# -- schemathesis over the OpenAPI document --------------------------------------------------


def schema_fuzz(
    base: str, report: FuzzReport, max_examples: int, seed: int = 0, project: str = "demo"
) -> None:
    """Positive and negative cases for every operation of ``/schema/openapi.json``; half of
    them with ``project_id`` pinned to a real project so they reach real data."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            route = f"{operation.method.upper()} {operation.path}"
            pinned = {"project_id": project} if "{project_id}" in operation.path else None
            strategies = [
                operation.as_strategy(mode, path_parameters=pin)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                for pin in ((None,) if pinned is None else (None, pinned))
            ]

            random.seed(seed)
            _schema_runner(session, base, report, route, strategies, max_examples)()


def _schema_runner(
    session: requests.Session,
    base: str,
    report: FuzzReport,
    route: str,
    strategies: list[Any],
    max_examples: int,
) -> Any:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        request = f"{case.method} {case.formatted_path} {str(case.body)[:200]}"
        try:
            answer = case.call(base_url=base, session=session, timeout=60)
        except requests.RequestException as exc:
            report.record("openapi (schemathesis)", route, 0, f"{request} {exc!r}")
            return
        report.record("openapi (schemathesis)", route, answer.status_code, request)

    return run


# -- mutations of our own ---------------------------------------------------------------------


def json_mutations(depth_limit: int, body_limit: int) -> Iterator[tuple[str, bytes]]:
    """Bodies a JSON route must refuse or accept without failing: depth around and far beyond
    the limit, size beyond the limit, wrong top-level types, numbers and text JSON edge cases."""
    for depth in (depth_limit - 1, depth_limit, depth_limit + 1, 10_000, 100_000):
        yield f"array depth {depth}", b"[" * depth + b"]" * depth
        yield f"object depth {depth}", b'{"a":' * depth + b"1" + b"}" * depth
    yield "unclosed depth 100000", b"[" * 100_000
    yield "brackets in a string", json.dumps({"x": "[" * 100_000}).encode()
    yield "over the size limit", b'{"x": "' + b"a" * (body_limit + 1) + b'"}'
    yield from (
        ("empty", b""),
        ("spaces", b"   "),
        ("null", b"null"),
        ("number", b"1"),
        ("huge int", b"1" + b"0" * 5000),
        ("huge float", b"1e400"),
        ("NaN", b"NaN"),
        ("-Infinity", b"-Infinity"),
        ("string", b'"x"'),
        ("list", b"[1, 2]"),
        ("bool", b"true"),
        ("broken", b'{"a": '),
        ("binary", bytes(range(256))),
        ("bad utf-8", b'{"a": "\xff\xfe"}'),
        ("lone surrogate", b'{"a": "\\ud800"}'),
        ("BOM", b'\xef\xbb\xbf{"a": 1}'),
        ("duplicate keys", b'{"a": 1, "a": 2}'),
        ("wide object", json.dumps({f"k{i}": i for i in range(20_000)}).encode()),
        ("long list", json.dumps(list(range(100_000))).encode()),
    )


VALUES: list[Any] = [
    None, True, 0, -1, 2**31, 2**63, 2**64, 10**30, -(10**30), 1.5, -0.0, 1e308, "", "x",
    "x" * 5000, "../../etc/passwd", "\u202e", "\x00", [], [1], [["x"]], {}, {"a": 1},
    ["4", 0], ["999", 0], ["4", -1], ["4", 2**63],
]  # fmt: skip


TOP_LEVEL = [
    "prompt",
    "client_id",
    "extra_data",
    "number",
    "front",
    "prompt_id",
    "partial_execution_targets",
]


def prompt_mutations(
    base_prompt: dict[str, Any], rounds: int, seed: int
) -> Iterator[tuple[str, Any]]:
    """ComfyUI ``/prompt`` bodies: a valid txt2img prompt with random inputs, node ids, class
    types and top-level fields replaced by values of other types."""
    rng = random.Random(seed)
    for i in range(rounds):
        prompt = copy.deepcopy(base_prompt)
        body: dict[str, Any] = {"prompt": prompt, "client_id": f"fuzz{i}"}
        for _ in range(rng.randint(1, 4)):
            node_id = rng.choice(list(prompt) or ["1"])
            node = prompt.get(node_id)
            what = rng.randrange(6)
            if what == 0 and isinstance(node, dict) and isinstance(node.get("inputs"), dict):
                inputs = node["inputs"]
                key = rng.choice(list(inputs) or ["x"])
                inputs[key] = rng.choice(VALUES)
            elif what == 1 and isinstance(node, dict):
                node["class_type"] = rng.choice([*VALUES, "KSampler", "NoSuchNode", "SaveImage"])
            elif what == 2:
                prompt.pop(node_id, None)
            elif what == 3:
                prompt[str(rng.choice(VALUES))] = rng.choice(VALUES)
            elif what == 4:
                body[rng.choice(TOP_LEVEL)] = rng.choice(VALUES)
            elif isinstance(node, dict):
                node["inputs"] = rng.choice(VALUES)
        yield f"prompt mutation {i}", body


def _send(
    report: FuzzReport,
    client: httpx.Client,
    family: str,
    route: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> None:
    try:
        answer = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        report.record(family, route, 0, f"{method} {url} {exc!r}")
        return
    body = kwargs.get("content", b"")
    request = f"{method} {url} {kwargs.get('params', '')} {body[:120]!r}"
    report.record(family, route, answer.status_code, request)


def mutation_fuzz(
    main: str,
    comfy: str,
    report: FuzzReport,
    *,
    depth_limit: int = 256,
    body_limit: int = 1024 * 1024,
    prompt_rounds: int = 50,
    query_rounds: int = 5,
    seed: int = 0,
    base_prompt: dict[str, Any] | None = None,
) -> None:
    """Our mutations against the main listener's JSON routes, the ComfyUI routes on both
    listeners (``comfy`` and ``main``/api) and ComfyUI's GET routes."""
    rng = random.Random(seed)
    mutations = [raw for _, raw in json_mutations(depth_limit, body_limit)]
    with httpx.Client(timeout=120) as client:

        def send(family: str, route: str, method: str, url: str, **kwargs: Any) -> None:
            _send(report, client, family, route, method, url, **kwargs)

        json_type, form = {"Content-Type": "application/json"}, {"Content-Type": FORM}
        for method, path in MAIN_JSON_ROUTES:
            route = f"{method} {path}"
            for raw in mutations:
                send("takeflow JSON mutations", route, method, main + path, content=raw,
                     headers=json_type)  # fmt: skip
            send("takeflow JSON mutations", route, method, main + path, content=b"{}",
                 headers={"Content-Type": "text/plain"})  # fmt: skip
        for path in COMFY_JSON_ROUTES:
            for prefix, base in (("", comfy), ("/api", main)):
                url, route = f"{base}{prefix}{path}", f"POST {prefix}{path}"
                for raw in mutations:
                    send("comfy JSON mutations", route, "POST", url, content=raw, headers=form)
        prompt = base_prompt or {"1": {"class_type": "EmptyLatentImage", "inputs": {}}}
        for _, body in prompt_mutations(prompt, prompt_rounds, seed):
            send("comfy prompt mutations", "POST /prompt", "POST", f"{comfy}/prompt",
                 content=json.dumps(body).encode(), headers={"Content-Type": FORM})  # fmt: skip
        params = ["max_items", "offset", "filename", "subfolder", "type", "preview", "channel"]
        for path in COMFY_GET_ROUTES:
            for _ in range(query_rounds):
                segment = quote(str(rng.choice(VALUES))[:200], safe="") or "x"
                concrete = path.replace("{id}", segment)
                query = {p: str(rng.choice(VALUES))[:300] for p in rng.sample(params, 3)}
                send("comfy GET queries", f"GET {path}", "GET", comfy + concrete, params=query)


def websocket_fuzz(ws_base: str, report: FuzzReport, depth_limit: int = 256) -> None:
    """Mutated messages on the Takeflow WebSocket; after each, a ping must still be answered
    (``status`` 101 counts a live socket, 0 a dead one)."""
    messages: list[str | bytes] = [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * (depth_limit + 1) + "1" + "}" * (depth_limit + 1),
        "{" * 100_000,
        "not json",
        "[]",
        "null",
        '{"type": 1}',
        '{"type": "subscribe", "task_ids": "x", "project_ids": 5}',
        '{"type": "subscribe", "project_ids": ["../x"], "last_id": -1e99}',
        json.dumps({"type": "subscribe", "task_ids": [f"t{i}" for i in range(50_000)]}),
        b"\xff\xfe binary",
    ]

    async def run() -> None:
        async with websockets.connect(f"{ws_base}/ws/fuzz", max_size=None) as ws:
            for message in messages:
                label = message[:40] if isinstance(message, str) else repr(message[:20])
                try:
                    await ws.send(message)
                    await ws.send(json.dumps({"type": "ping"}))
                    while True:
                        answer = json.loads(await asyncio.wait_for(ws.recv(), 20))
                        if answer.get("type") == "pong":
                            break
                    report.record("websocket messages", "WS /ws/{user}", 101, label)
                except (OSError, TimeoutError, websockets.ConnectionClosed) as exc:
                    report.record("websocket messages", "WS /ws/{user}", 0, f"{label} {exc!r}")
                    return

    asyncio.run(run())
