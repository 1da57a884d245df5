"""``llm_manager.v1.ConversationService``.

The API is defined with the rest of v1; its storage-backed implementation (SQLite default,
in-memory, PostgreSQL) lands with issue 5. Until then every method answers UNIMPLEMENTED
through the generated base class.
"""

from __future__ import annotations

from llm_manager.v1 import conversation_service_pb2_grpc


class ConversationServicer(conversation_service_pb2_grpc.ConversationServiceServicer):
    pass
