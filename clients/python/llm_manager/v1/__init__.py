"""Generated stubs of the llm_manager.v1 API (do not edit; run `make proto`)."""
