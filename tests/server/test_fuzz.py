"""A bounded fuzz run (``tests/server/fuzzing.py``; the longer one is ``bench/fuzz.py``):
schemathesis over every operation of the OpenAPI document, depth/size/type mutations on every
JSON route of both listeners and the ComfyUI GET routes, mutated WebSocket messages. No answer
may be >= 500, and the server logs no traceback."""

from __future__ import annotations

from tests.comfy.client import txt2img
from tests.server.fuzzing import FuzzReport, mutation_fuzz, schema_fuzz, websocket_fuzz
from tests.server.harness import ServerProcess
from tests.server.test_guard import servers  # noqa: F401 - fixture used by name


def test_no_fuzzed_request_gets_a_server_error(
    servers: tuple[ServerProcess, str],  # noqa: F811
) -> None:
    server, comfy = servers
    report = FuzzReport()
    schema_fuzz(server.base, report, max_examples=6, seed=1)
    mutation_fuzz(server.base, comfy, report, prompt_rounds=40, query_rounds=3, seed=1,
                  base_prompt=txt2img())  # fmt: skip
    websocket_fuzz(server.ws_base, report)
    families = {family for family, _ in report.statuses}
    assert families == {
        "openapi (schemathesis)", "takeflow JSON mutations", "comfy JSON mutations",
        "comfy prompt mutations", "comfy GET queries", "websocket messages",
    }  # fmt: skip
    assert report.requests > 500, report.summary()
    assert report.server_errors == 0, report.summary()
    assert "Traceback" not in server.log.read_text(errors="replace"), server.output()
