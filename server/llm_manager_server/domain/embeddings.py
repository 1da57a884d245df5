"""Provider-neutral embedding requests and results.

An :class:`EmbeddingRequest` is a batch of texts and a model; an :class:`Embeddings` is one
vector per input, in the inputs' order, with the provider's usage, the price table's cost and
how it was produced (the same :class:`CallMetadata` an :class:`Answer` carries). Every
transport (gRPC ``Embed``, HTTP ``/v1/embeddings``) builds its request with
:func:`embedding_request`, so the rules below hold for each of them alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import FieldViolation, invalid_request
from .types import MODEL_NAME_RULE, CallMetadata, Usage, is_valid_model_name

# OpenAI's own bounds for one embeddings request: 2048 inputs, 300k tokens in all. Characters
# are what a server can count before tokenizing; 2M is this service's request bound too.
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_CHARS = 2_000_000


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated batch: the texts, in order, and the model (``None``: the configured
    default embedding model, ``LLM_EMBEDDING_MODEL``)."""

    inputs: tuple[str, ...]
    model: str | None = None
    no_cache: bool = False
    no_store: bool = False


@dataclass(frozen=True, slots=True)
class EmbeddingCall:
    """One embedding request to one model: what a provider's ``embed`` receives."""

    model: str
    inputs: tuple[str, ...]
    # Seconds this attempt may take at most (already bounded by the caller's deadline).
    timeout_s: float | None = None
    # W3C trace context of this call's span, sent as HTTP headers to the provider.
    trace_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Embeddings:
    """One vector per input, in the inputs' order: the provider fills vectors, model and
    usage (embeddings have only prompt tokens), the router the cost and how it was produced."""

    vectors: list[list[float]]
    model: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    metadata: CallMetadata = field(default_factory=CallMetadata)

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


def embedding_request(inputs: Sequence[str], model: str, *, no_cache: bool = False, no_store: bool = False) -> EmbeddingRequest:
    """The validated request, or INVALID_REQUEST naming every bad field: at least one input
    and at most ``MAX_EMBEDDING_INPUTS``, none empty (an empty text has no meaning to embed;
    OpenAI refuses it too), ``MAX_EMBEDDING_CHARS`` in all, and a valid model name if given."""
    violations: list[FieldViolation] = []
    if not inputs:
        violations.append(FieldViolation("inputs", "give at least one text to embed"))
    elif len(inputs) > MAX_EMBEDDING_INPUTS:
        violations.append(FieldViolation("inputs", f"at most {MAX_EMBEDDING_INPUTS} texts per request, got {len(inputs)}"))
    empty = [i for i, text in enumerate(inputs) if not text.strip()]
    for index in empty[:8]:  # a few are enough to see the mistake
        violations.append(FieldViolation(f"inputs[{index}]", "must not be empty"))
    total = sum(len(text) for text in inputs)
    if total > MAX_EMBEDDING_CHARS:
        violations.append(FieldViolation("inputs", f"at most {MAX_EMBEDDING_CHARS} characters in all, got {total}"))
    if model and not is_valid_model_name(model):
        violations.append(FieldViolation("model", MODEL_NAME_RULE))
    if violations:
        raise invalid_request(*violations)
    return EmbeddingRequest(tuple(inputs), model or None, no_cache=no_cache, no_store=no_store)
