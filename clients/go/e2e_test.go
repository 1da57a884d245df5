// End-to-end tests of the Go stubs against a running llm-manager server at
// LLM_MANAGER_ADDR (`make test` starts one and sets it).
package llmmanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/llm-manager/llm-manager/clients/go/internal/testenv"
	llmv1 "github.com/llm-manager/llm-manager/clients/go/llmmanagerv1"
)

// callTimeout bounds each test's calls; the local model answers in well under
// a second, so hitting it means the server is stuck.
const callTimeout = 60 * time.Second

// dial connects to the server under test and returns a context bounded by
// callTimeout; both are released when the test ends.
func dial(t *testing.T) (*grpc.ClientConn, context.Context) {
	t.Helper()
	addr := testenv.Addr(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return conn, ctx
}

func TestGenerate(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)

	answer, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Prompt:       "Say hello in one short sentence.",
		Preferences:  &llmv1.GenerationPreferences{MaxTokens: proto.Int32(16)},
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	t.Logf("answer: %v", answer)

	if strings.TrimSpace(answer.GetText()) == "" {
		t.Error("text is empty")
	}
	if answer.GetModel() == "" {
		t.Error("model is empty")
	}
	usage := answer.GetUsage()
	if usage.GetCompletionTokens() <= 0 {
		t.Errorf("usage.completion_tokens = %d, want > 0", usage.GetCompletionTokens())
	}
	if usage.GetCompletionTokens() > 16 {
		t.Errorf("usage.completion_tokens = %d, want <= max_tokens 16", usage.GetCompletionTokens())
	}
	if got, want := usage.GetTotalTokens(), usage.GetPromptTokens()+usage.GetCompletionTokens(); got != want {
		t.Errorf("usage.total_tokens = %d, want prompt + completion = %d", got, want)
	}
	metadata := answer.GetMetadata()
	if len(metadata.GetModelChain()) == 0 {
		t.Error("metadata.model_chain is empty")
	}
	if metadata.GetCached() {
		t.Error("metadata.cached = true for a no_cache request")
	}
	if answer.GetFinishReason() == llmv1.FinishReason_FINISH_REASON_UNSPECIFIED {
		t.Error("finish_reason is unspecified")
	}
}

func TestStreamGenerate(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)

	stream, err := client.StreamGenerate(ctx, &llmv1.StreamGenerateRequest{
		Prompt:       "Count from one to ten in words.",
		Preferences:  &llmv1.GenerationPreferences{MaxTokens: proto.Int32(32)},
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		t.Fatalf("StreamGenerate: %v", err)
	}
	var messages []*llmv1.StreamGenerateResponse
	var text strings.Builder
	textMessages := 0
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("StreamGenerate after %d messages: %v", len(messages), err)
		}
		messages = append(messages, message)
		if message.GetText() != "" {
			textMessages++
			text.WriteString(message.GetText())
		}
	}
	t.Logf("%d messages, %d with text: %q", len(messages), textMessages, text.String())

	if textMessages < 2 {
		t.Errorf("%d messages carried text, want >= 2 (incremental streaming)", textMessages)
	}
	if strings.TrimSpace(text.String()) == "" {
		t.Fatal("the streamed text is empty")
	}
	for i, message := range messages[:len(messages)-1] {
		if message.GetUsage() != nil || message.GetMetadata() != nil {
			t.Errorf("message %d of %d carries usage or metadata, want them on the last only", i+1, len(messages))
		}
	}
	last := messages[len(messages)-1]
	t.Logf("last message: %v", last)
	usage := last.GetUsage()
	if usage.GetCompletionTokens() <= 0 {
		t.Errorf("last usage.completion_tokens = %d, want > 0", usage.GetCompletionTokens())
	}
	if got, want := usage.GetTotalTokens(), usage.GetPromptTokens()+usage.GetCompletionTokens(); got != want {
		t.Errorf("last usage.total_tokens = %d, want prompt + completion = %d", got, want)
	}
	if last.GetFinishReason() == llmv1.FinishReason_FINISH_REASON_UNSPECIFIED {
		t.Error("last finish_reason is unspecified")
	}
	if len(last.GetMetadata().GetModelChain()) == 0 {
		t.Error("last metadata.model_chain is empty")
	}
}

func TestListModels(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)

	response, err := client.ListModels(ctx, &llmv1.ListModelsRequest{})
	if err != nil {
		t.Fatalf("ListModels: %v", err)
	}
	models := response.GetModels()
	if len(models) == 0 {
		t.Fatal("no models listed")
	}
	for _, model := range models {
		t.Logf("model: %v", model)
	}
	hasLocal := slices.ContainsFunc(models, func(model *llmv1.Model) bool {
		return model.GetProvider() == llmv1.Provider_PROVIDER_LOCAL
	})
	if !hasLocal {
		t.Error("no model with provider PROVIDER_LOCAL")
	}
}

func TestGenerateInvalidRequest(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)

	_, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Prompt:      "",
		Preferences: &llmv1.GenerationPreferences{MaxTokens: proto.Int32(-1)},
	})
	if err == nil {
		t.Fatal("Generate with an empty prompt and max_tokens -1 succeeded")
	}
	st := status.Convert(err)
	t.Logf("status: code=%s message=%q", st.Code(), st.Message())
	if st.Code() != codes.InvalidArgument {
		t.Errorf("code = %s, want InvalidArgument", st.Code())
	}

	var errorInfos []*errdetails.ErrorInfo
	var violations []string
	for _, detail := range st.Details() {
		switch detail := detail.(type) {
		case *errdetails.ErrorInfo:
			errorInfos = append(errorInfos, detail)
		case *errdetails.BadRequest:
			for _, violation := range detail.GetFieldViolations() {
				violations = append(violations, violation.GetField())
			}
		case error:
			t.Errorf("undecodable status detail: %v", detail)
		}
	}
	if len(errorInfos) != 1 {
		t.Fatalf("got %d ErrorInfo details, want exactly 1", len(errorInfos))
	}
	if got := errorInfos[0].GetReason(); got != "INVALID_REQUEST" {
		t.Errorf("ErrorInfo.reason = %q, want INVALID_REQUEST", got)
	}
	if got := errorInfos[0].GetDomain(); got != "llm-manager" {
		t.Errorf("ErrorInfo.domain = %q, want llm-manager", got)
	}
	for _, field := range []string{"prompt", "preferences.max_tokens"} {
		if !slices.Contains(violations, field) {
			t.Errorf("BadRequest field violations %v lack %q", violations, field)
		}
	}
}

func TestHealth(t *testing.T) {
	conn, ctx := dial(t)
	client := healthpb.NewHealthClient(conn)

	for _, service := range []string{"", "llm_manager.v1.LLMManagerService"} {
		response, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Errorf("Health.Check(%q): %v", service, err)
			continue
		}
		if got := response.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Health.Check(%q) = %s, want SERVING", service, got)
		}
	}
}

// queryMetrics is the tool of the tool tests; its parameters are a JSON
// Schema the server checks the model's arguments against.
var queryMetricsSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"metric":  map[string]any{"type": "string", "maxLength": 40},
		"minutes": map[string]any{"type": "integer", "minimum": 1, "maximum": 1440},
	},
	"required":             []any{"metric", "minutes"},
	"additionalProperties": false,
}

func queryMetricsTool(t *testing.T) *llmv1.Tool {
	t.Helper()
	parameters, err := structpb.NewStruct(queryMetricsSchema)
	if err != nil {
		t.Fatalf("structpb.NewStruct: %v", err)
	}
	return &llmv1.Tool{Name: "query_metrics", Description: "Query a telemetry metric over the last N minutes.", Parameters: parameters}
}

// checkCalls asserts that calls are query_metrics calls with distinct ids and
// arguments valid against its schema.
func checkCalls(t *testing.T, calls []*llmv1.ToolCall) {
	t.Helper()
	if len(calls) == 0 {
		t.Fatal("no tool calls")
	}
	ids := map[string]bool{}
	for _, call := range calls {
		t.Logf("tool call: %v", call)
		if call.GetId() == "" || ids[call.GetId()] {
			t.Errorf("call id %q is empty or repeated", call.GetId())
		}
		ids[call.GetId()] = true
		if call.GetName() != "query_metrics" {
			t.Errorf("call name = %q, want query_metrics", call.GetName())
		}
		if err := testenv.Validate(queryMetricsSchema, call.GetArguments().AsMap()); err != nil {
			t.Errorf("call %s arguments %v: %v", call.GetId(), call.GetArguments().AsMap(), err)
		}
	}
}

func TestGenerateToolRoundTrip(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)
	tools := []*llmv1.Tool{queryMetricsTool(t)}
	const question = "What is the p99 latency of checkout over the last 15 minutes?"

	first, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Prompt:       question,
		Tools:        tools,
		ToolChoice:   &llmv1.ToolChoice{Mode: llmv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED},
		Preferences:  &llmv1.GenerationPreferences{MaxTokens: proto.Int32(400), Temperature: proto.Float64(0)},
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		t.Fatalf("Generate with a required tool: %v", err)
	}
	if got := first.GetFinishReason(); got != llmv1.FinishReason_FINISH_REASON_TOOL_CALLS {
		t.Errorf("finish_reason = %s, want FINISH_REASON_TOOL_CALLS", got)
	}
	if first.GetText() != "" {
		t.Errorf("text = %q beside tool calls, want empty", first.GetText())
	}
	checkCalls(t, first.GetToolCalls())

	messages := []*llmv1.ChatMessage{
		{Role: llmv1.Role_ROLE_USER, Content: question},
		{Role: llmv1.Role_ROLE_ASSISTANT, ToolCalls: first.GetToolCalls()},
	}
	for _, call := range first.GetToolCalls() {
		messages = append(messages, &llmv1.ChatMessage{Role: llmv1.Role_ROLE_TOOL, ToolCallId: call.GetId(), Content: `{"p99_ms": 412}`})
	}
	final, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Messages:     messages,
		Tools:        tools,
		ToolChoice:   &llmv1.ToolChoice{Mode: llmv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE},
		Preferences:  &llmv1.GenerationPreferences{MaxTokens: proto.Int32(40), Temperature: proto.Float64(0)},
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		t.Fatalf("Generate with the tool results: %v", err)
	}
	t.Logf("final answer: %q (%s)", final.GetText(), final.GetFinishReason())
	if strings.TrimSpace(final.GetText()) == "" {
		t.Error("the final answer's text is empty")
	}
	if len(final.GetToolCalls()) != 0 {
		t.Errorf("the final answer calls tools %v with tool choice none", final.GetToolCalls())
	}
	if got := final.GetFinishReason(); got != llmv1.FinishReason_FINISH_REASON_STOP && got != llmv1.FinishReason_FINISH_REASON_LENGTH {
		t.Errorf("final finish_reason = %s, want STOP or LENGTH", got)
	}

	// A ROLE_TOOL message that answers no call is the caller's error.
	_, err = client.Generate(ctx, &llmv1.GenerateRequest{
		Messages: []*llmv1.ChatMessage{{Role: llmv1.Role_ROLE_TOOL, ToolCallId: "call_none", Content: "{}"}},
		Tools:    tools,
	})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument {
		t.Errorf("a tool result without its call: %v, want InvalidArgument", err)
	}
}

func TestStreamGenerateSendsEachToolCallOnceComplete(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)

	stream, err := client.StreamGenerate(ctx, &llmv1.StreamGenerateRequest{
		Prompt:       "Check the error rate of the payments service over the last hour.",
		Tools:        []*llmv1.Tool{queryMetricsTool(t)},
		ToolChoice:   &llmv1.ToolChoice{ToolName: "query_metrics"},
		Preferences:  &llmv1.GenerationPreferences{MaxTokens: proto.Int32(400), Temperature: proto.Float64(0)},
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		t.Fatalf("StreamGenerate: %v", err)
	}
	var calls []*llmv1.ToolCall
	var last *llmv1.StreamGenerateResponse
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("StreamGenerate: %v", err)
		}
		if message.GetText() != "" {
			t.Errorf("text %q in a tool-call stream", message.GetText())
		}
		calls = append(calls, message.GetToolCalls()...)
		last = message
	}
	checkCalls(t, calls)
	if last.GetFinishReason() != llmv1.FinishReason_FINISH_REASON_TOOL_CALLS || last.GetUsage() == nil {
		t.Errorf("last message = %v, want finish_reason FINISH_REASON_TOOL_CALLS with usage", last)
	}
}

func TestGenerateStructuredOutput(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)
	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"service":  map[string]any{"type": "string", "maxLength": 40},
			"replicas": map[string]any{"type": "integer", "minimum": 1, "maximum": 9},
			"tier":     map[string]any{"enum": []any{"frontend", "backend", "batch"}},
		},
		"required":             []any{"service", "replicas", "tier"},
		"additionalProperties": false,
	}
	responseSchema, err := structpb.NewStruct(schema)
	if err != nil {
		t.Fatalf("structpb.NewStruct: %v", err)
	}

	answer, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Prompt: "The checkout service: a frontend with 3 replicas.",
		Preferences: &llmv1.GenerationPreferences{
			ResponseFormat: llmv1.ResponseFormat_RESPONSE_FORMAT_JSON_SCHEMA,
			ResponseSchema: responseSchema,
			MaxTokens:      proto.Int32(96),
			Temperature:    proto.Float64(0),
		},
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		t.Fatalf("Generate with a response schema: %v", err)
	}
	t.Logf("structured_output: %v; text: %q", answer.GetStructuredOutput(), answer.GetText())
	if answer.GetStructuredOutput() == nil {
		t.Fatal("no structured_output")
	}
	document := answer.GetStructuredOutput().AsMap()
	if err := testenv.Validate(schema, document); err != nil {
		t.Errorf("structured_output %v: %v", document, err)
	}
	var text map[string]any
	if err := json.Unmarshal([]byte(answer.GetText()), &text); err != nil {
		t.Fatalf("text %q is not JSON: %v", answer.GetText(), err)
	}
	if !reflect.DeepEqual(text, document) {
		t.Errorf("text %v is not the structured_output %v", text, document)
	}
}

func TestEmbed(t *testing.T) {
	conn, ctx := dial(t)
	client := llmv1.NewLLMManagerServiceClient(conn)

	inputs := []string{"checkout p99 latency spiked", "disk full on node-7", "checkout p99 latency spiked"}
	reply, err := client.Embed(ctx, &llmv1.EmbedRequest{Inputs: inputs})
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	embeddings := reply.GetEmbeddings()
	if len(embeddings) != len(inputs) {
		t.Fatalf("got %d embeddings for %d inputs", len(embeddings), len(inputs))
	}
	first, second, third := embeddings[0].GetValues(), embeddings[1].GetValues(), embeddings[2].GetValues()
	if len(first) == 0 || len(second) != len(first) || len(third) != len(first) {
		t.Fatalf("dimensions %d, %d, %d: want equal and non-zero", len(first), len(second), len(third))
	}
	if !slices.Equal(first, third) {
		t.Error("the same input got different vectors")
	}
	if slices.Equal(first, second) {
		t.Error("different inputs got the same vector")
	}
	if reply.GetUsage().GetPromptTokens() <= 0 || reply.GetUsage().GetCompletionTokens() != 0 {
		t.Errorf("usage = %v, want prompt tokens only", reply.GetUsage())
	}
	if reply.GetModel() == "" || reply.GetMetadata().GetProvider() != llmv1.Provider_PROVIDER_LOCAL {
		t.Errorf("model %q provider %s, want the local model", reply.GetModel(), reply.GetMetadata().GetProvider())
	}

	_, err = client.Embed(ctx, &llmv1.EmbedRequest{Inputs: []string{"fine", ""}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("Embed with an empty input: code = %s, want InvalidArgument", st.Code())
	}
	var violations []string
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, violation := range bad.GetFieldViolations() {
				violations = append(violations, violation.GetField())
			}
		}
	}
	if !slices.Contains(violations, "inputs[1]") {
		t.Errorf("field violations %v lack inputs[1]", violations)
	}
}
