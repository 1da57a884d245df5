"""Python client of llm-manager: generated stubs in ``llm_manager.v1``, an async client in
``llm_manager.client``."""
