package main

import (
	"context"
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
