"""Python client of llm-manager: generated stubs in ``llm_manager.v1``, an async client in
``llm_manager.client`` (with helpers for tools, tool results and structured output: ``tool``,
``tool_calls``, ``assistant_tool_calls_message``, ``tool_result_message``, ``structured_output``)."""
