// End-to-end tests of the Go stubs against a running llm-manager server at
// LLM_MANAGER_ADDR (`make test` starts one and sets it).
package llmmanager_test

import (
	"context"
	"errors"
	"io"
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
