"""The data plane: what the service does for a call, knowing nothing of gRPC.

``Generator`` answers a validated request (response cache, then the router); ``ConversationTurns``
runs a conversation turn (store the turn, send the conversation so far, store the reply);
``Embedder`` embeds a batch of texts (response cache, then the router). The servicers only
translate proto <-> domain and call these.
"""

from .embedder import Embedder
from .generator import Generator
from .turns import ConversationTurns

__all__ = ["ConversationTurns", "Embedder", "Generator"]
