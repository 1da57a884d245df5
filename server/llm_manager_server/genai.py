"""OpenTelemetry GenAI semantic-convention names, in one place.

The constants in ``opentelemetry-semantic-conventions`` are marked as moved to the GenAI
conventions repository, so the names this service emits are defined here.
"""

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
# "text" or "json" (the conventions' well-known values).
OUTPUT_TYPE = "gen_ai.output.type"
# The tools offered, as JSON (the conventions' opt-in attribute: names, descriptions, schemas).
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

OPERATION_CHAT = "chat"
OPERATION_EMBEDDINGS = "embeddings"
# The number of dimensions of the vectors an embeddings call returned.
EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"

METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"

# This service's own attributes and metrics.
ATTEMPT = "llm_manager.attempt"
FALLBACK = "llm_manager.fallback"
STRATEGY = "llm_manager.routing.strategy"
CANDIDATES = "llm_manager.routing.candidates"
STREAMING = "llm_manager.streaming"
DEPLOYMENT = "llm_manager.deployment"
# The number of texts in one embeddings call.
EMBEDDING_INPUTS = "llm_manager.embeddings.inputs"
CACHE_HIT = "llm_manager.cache.hit"
# The names of the tools offered and of the tools the model called (cheap, always recorded).
REQUEST_TOOL_NAMES = "llm_manager.request.tool_names"
RESPONSE_TOOL_CALLS = "llm_manager.response.tool_calls"
METRIC_COST = "llm_manager.cost"
METRIC_CACHE_LOOKUPS = "llm_manager.cache.lookups"

# Bucket boundaries the conventions recommend.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
