"""The log writer: records queued on the caller's thread, written in batches by one thread."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from llm_manager_server.interceptors import request_id_var
from llm_manager_server.logs import configure_logging


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_lines_carry_the_request_id_and_keep_what_was_logged(output: io.StringIO) -> None:
    writer = configure_logging("INFO", output)
    log = logging.getLogger("llm_manager_server.test")
    token = request_id_var.set("req-42")
    try:
        log.info("rpc %s -> %s in %.1f ms", "/llm_manager.v1.LLMManagerService/Generate", "OK", 1.25)
        changing = {"state": "before"}
        log.warning("a library logged %s", changing)
        changing["state"] = "after"  # mutated before the writer thread formats the line
        log.debug("below the level: not written")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        request_id_var.reset(token)
    writer.stop()  # writes everything queued

    lines = output.getvalue().splitlines()
    assert "INFO llm_manager_server.test [req-42] rpc /llm_manager.v1.LLMManagerService/Generate -> OK in 1.2 ms" in lines[0]
    assert "WARNING llm_manager_server.test [req-42] a library logged {'state': 'before'}" in lines[1]
    assert "ERROR llm_manager_server.test [req-42] failed" in lines[2]
    assert "ValueError: boom" in output.getvalue()
    assert "below the level" not in output.getvalue()
