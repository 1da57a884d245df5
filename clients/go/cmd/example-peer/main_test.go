package main

import (
	"context"
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/llm-manager/llm-manager/clients/go/internal/testenv"
)

// recorder keeps every write and counts flushes, so the test can see that
// streamed text reaches the writer chunk by chunk.
type recorder struct {
	writes  []string
	flushes int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) Flush() error {
	r.flushes++
	return nil
}

func (r *recorder) String() string { return strings.Join(r.writes, "") }

func TestRunPrintsModelsAnswerAndStream(t *testing.T) {
	addr := testenv.Addr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out := &recorder{}
	if err := run(ctx, addr, "Name three colours, separated by commas.", out); err != nil {
		t.Fatalf("run: %s\noutput so far:\n%s", describe(err), out)
	}
	output := out.String()
	t.Logf("output:\n%s", output)

	for _, want := range []string{"models:\n", "PROVIDER_LOCAL", "generate:\n", "completion_tokens=", "latency_ms="} {
		if !strings.Contains(output, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// The streamed chunks are the writes between the "stream: " header and
	// the newline written before the final message's "  model: " line.
	start, end := -1, -1
	for i, write := range out.writes {
		if start < 0 && write == "stream: " {
			start = i
		} else if start >= 0 && strings.HasPrefix(write, "  model: ") {
			end = i - 1
			break
		}
	}
	if start < 0 || end <= start || out.writes[end] != "\n" {
		t.Fatal("output has no complete stream section")
	}
	chunks := out.writes[start+1 : end]
	streamed := strings.Join(chunks, "")
	if strings.TrimSpace(streamed) == "" {
		t.Fatal("no streamed text was written")
	}
	if !strings.Contains(output, "stream: "+streamed+"\n") {
		t.Errorf("output does not contain the streamed text %q on its stream line", streamed)
	}
	if len(chunks) < 2 {
		t.Errorf("streamed text arrived in %d write(s), want it chunk by chunk (>= 2)", len(chunks))
	}
	if out.flushes < len(chunks) {
		t.Errorf("flushed %d times for %d chunks, want a flush per chunk", out.flushes, len(chunks))
	}
	if strings.Contains(output, "FINISH_REASON_UNSPECIFIED") {
		t.Error("a finish_reason is unspecified")
	}
}

func TestRunReportsInvalidRequest(t *testing.T) {
	addr := testenv.Addr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	err := run(ctx, addr, "", &recorder{})
	if err == nil {
		t.Fatal("run with an empty prompt succeeded, want INVALID_ARGUMENT")
	}
	description := describe(err)
	t.Logf("described error:\n%s", description)
	for _, want := range []string{"Generate failed", "code: InvalidArgument", "reason: INVALID_REQUEST (domain llm-manager)", "field prompt:"} {
		if !strings.Contains(description, want) {
			t.Errorf("description lacks %q", want)
		}
	}
}

// traceIDLine is the line runTraced writes before the calls.
var traceIDLine = regexp.MustCompile(`(?m)^trace_id: ([0-9a-f]{32})$`)

func TestRunTracedPrintsTraceIDAndTracesEveryCall(t *testing.T) {
	addr := testenv.Addr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	exporter := tracetest.NewInMemoryExporter()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer provider.Shutdown(context.Background())

	out := &recorder{}
	if err := runTraced(ctx, provider, addr, "Name three colours, separated by commas.", out); err != nil {
		t.Fatalf("runTraced: %s\noutput so far:\n%s", describe(err), out)
	}
	output := out.String()
	t.Logf("output:\n%s", output)

	if !strings.HasPrefix(output, "trace_id: ") {
		t.Errorf("output does not start with the trace_id line")
	}
	match := traceIDLine.FindStringSubmatch(output)
	if match == nil {
		t.Fatal("output has no line \"trace_id: <32 lowercase hex>\"")
	}
	traceID, err := trace.TraceIDFromHex(match[1])
	if err != nil || !traceID.IsValid() {
		t.Fatalf("trace id %q is not a valid non-zero trace id (err %v)", match[1], err)
	}
	for _, want := range []string{"models:\n", "generate:\n", "stream: "} {
		if !strings.Contains(output, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// The printed id is the trace of the "example-peer" span, and each call
	// made a client span under it in that trace: the span whose context
	// otelgrpc sends as the traceparent header.
	spans := exporter.GetSpans()
	var root *tracetest.SpanStub
	for i := range spans {
		if spans[i].Name == spanName {
			root = &spans[i]
		}
	}
	if root == nil {
		t.Fatalf("no %q span among %d spans", spanName, len(spans))
	}
	if got := root.SpanContext.TraceID(); got != traceID {
		t.Errorf("%s span trace id = %s, printed %s", spanName, got, traceID)
	}
	if !root.SpanContext.IsSampled() {
		t.Errorf("%s span is not sampled, so the traceparent would tell the server not to record", spanName)
	}
	for _, rpc := range []string{"ListModels", "Generate", "StreamGenerate"} {
		name := "llm_manager.v1.LLMManagerService/" + rpc
		found := false
		for _, span := range spans {
			if span.Name != name {
				continue
			}
			found = true
			if span.SpanKind != trace.SpanKindClient {
				t.Errorf("%s span kind = %s, want client", name, span.SpanKind)
			}
			if span.SpanContext.TraceID() != traceID || span.Parent.SpanID() != root.SpanContext.SpanID() {
				t.Errorf("%s span is in trace %s under span %s, want trace %s under %s",
					name, span.SpanContext.TraceID(), span.Parent.SpanID(), traceID, root.SpanContext.SpanID())
			}
		}
		if !found {
			t.Errorf("no client span %q", name)
		}
	}
}

// toolCallLine and toolResultLine are what toolRoundTrip prints per call.
var (
	toolCallLine   = regexp.MustCompile(`(?m)^  tool_call: id=(\S+) name=(\S+) arguments=(\{.*\})$`)
	toolResultLine = regexp.MustCompile(`(?m)^  tool_result: id=(\S+) (\{.*\})$`)
	answerLine     = regexp.MustCompile(`(?m)^answer:\n  text: (.+)$`)
)

func TestToolRoundTripPrintsTheCallItsResultAndTheAnswer(t *testing.T) {
	addr := testenv.Addr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	out := &recorder{}
	if err := callServer(ctx, addr, defaultToolsPrompt, out, toolRoundTrip); err != nil {
		t.Fatalf("tool round trip: %s\noutput so far:\n%s", describe(err), out)
	}
	output := out.String()
	t.Logf("output:\n%s", output)

	if !strings.Contains(output, "finish_reason=FINISH_REASON_TOOL_CALLS\n") {
		t.Error("the first answer's finish_reason is not FINISH_REASON_TOOL_CALLS")
	}
	calls := toolCallLine.FindAllStringSubmatch(output, -1)
	results := toolResultLine.FindAllStringSubmatch(output, -1)
	if len(calls) == 0 {
		t.Fatal("no tool_call line")
	}
	if len(results) != len(calls) {
		t.Fatalf("%d tool_result lines for %d tool_call lines", len(results), len(calls))
	}
	for i, call := range calls {
		id, name, arguments := call[1], call[2], call[3]
		if name != "query_metrics" {
			t.Errorf("call %s names %q, want query_metrics", id, name)
		}
		var decoded map[string]any
		if err := json.Unmarshal([]byte(arguments), &decoded); err != nil {
			t.Fatalf("call %s arguments %s are not JSON: %v", id, arguments, err)
		}
		if err := testenv.Validate(queryMetricsParameters, decoded); err != nil {
			t.Errorf("call %s arguments %s: %v", id, arguments, err)
		}
		if results[i][1] != id {
			t.Errorf("result %d answers %s, want call %s", i, results[i][1], id)
		}
		var result map[string]any
		if err := json.Unmarshal([]byte(results[i][2]), &result); err != nil {
			t.Fatalf("result %s is not JSON: %v", results[i][2], err)
		}
		if result["metric"] != decoded["metric"] || result["minutes"] != decoded["minutes"] || result["value"] != 412.0 {
			t.Errorf("result %v does not answer the arguments %v", result, decoded)
		}
	}
	answer := answerLine.FindStringSubmatch(output)
	if answer == nil || strings.TrimSpace(answer[1]) == "" {
		t.Fatal("no non-empty final answer text")
	}
	if strings.Contains(output[strings.Index(output, "answer:\n"):], "FINISH_REASON_TOOL_CALLS") ||
		strings.Contains(output, "FINISH_REASON_UNSPECIFIED") {
		t.Error("the final answer's finish_reason is not a text answer's")
	}
}

func TestStructuredOutputPrintsADocumentThatConforms(t *testing.T) {
	addr := testenv.Addr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	schema, err := parseSchema("")
	if err != nil {
		t.Fatal(err)
	}
	out := &recorder{}
	if err := callServer(ctx, addr, defaultStructuredPrompt, out, structuredOutput(schema)); err != nil {
		t.Fatalf("structured output: %s\noutput so far:\n%s", describe(err), out)
	}
	output := out.String()
	t.Logf("output:\n%s", output)

	match := regexp.MustCompile(`(?m)^structured_output: (\{.*\})\n  text: (\{.*\})$`).FindStringSubmatch(output)
	if match == nil {
		t.Fatal("no structured_output line followed by its text")
	}
	var document, text map[string]any
	if err := json.Unmarshal([]byte(match[1]), &document); err != nil {
		t.Fatalf("structured_output %s is not JSON: %v", match[1], err)
	}
	if err := json.Unmarshal([]byte(match[2]), &text); err != nil {
		t.Fatalf("text %s is not JSON: %v", match[2], err)
	}
	if err := testenv.Validate(serviceSchema, document); err != nil {
		t.Errorf("structured_output %s: %v", match[1], err)
	}
	if !reflect.DeepEqual(document, text) {
		t.Errorf("text %v is not the structured_output %v", text, document)
	}
	if !strings.Contains(output, "finish_reason=FINISH_REASON_STOP") {
		t.Error("finish_reason is not FINISH_REASON_STOP")
	}

	if _, err := parseSchema("[1, 2]"); err == nil {
		t.Error("parseSchema accepted a JSON array")
	}
	custom, err := parseSchema(`{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`)
	if err != nil || custom.GetFields()["required"].GetListValue().GetValues()[0].GetStringValue() != "name" {
		t.Errorf("parseSchema of a custom schema = %v, %v", custom, err)
	}
}
