// Command example-peer shows how a Go service calls llm-manager: it lists the
// configured models, asks for one complete answer, then streams a second
// answer chunk by chunk.
//
// Usage:
//
//	go run ./cmd/example-peer -addr 127.0.0.1:50051 -prompt "Say hello."
//	go run ./cmd/example-peer -tools
//	go run ./cmd/example-peer -structured
//	go run ./cmd/example-peer -addr localhost:50051 -cacert ca.pem -cert client.pem -key client.key
//	LLM_API_KEY=llmm_... go run ./cmd/example-peer   # a server with API keys on
//
// With -tls or -cacert it connects over TLS (-cacert: the CA that signed the
// server's certificate; without it, the system's CAs), and with -cert and -key
// it presents a client certificate, for a server that requires mutual TLS.
//
// With -tools it does a tool round trip instead: it offers the model a
// query_metrics tool (its JSON Schema built with structpb), prints the call the
// model makes, runs the tool locally, sends the result back as a ROLE_TOOL
// message and prints the model's final answer. With -structured it asks for an
// answer that conforms to a JSON Schema (-schema, or a built-in service
// description schema) and prints the structured_output.
//
// With -trace (the default) all calls run under one OpenTelemetry span named
// "example-peer", whose trace id is printed first as "trace_id: <32 hex>", and
// each call carries a W3C traceparent header so that the server's spans
// continue that trace. The peer's own spans are exported by OTLP/gRPC only when
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.
//
// With -api-key (default: the LLM_API_KEY environment variable, which keeps the
// key out of the process list) every call carries "authorization: Bearer <key>".
//
// On failure it prints the gRPC status code, its message and the
// google.rpc.ErrorInfo reason (for example MODEL_UNAVAILABLE), and exits 1.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	llmv1 "github.com/llm-manager/llm-manager/clients/go/llmmanagerv1"
)

// maxTokens bounds each answer so the example finishes quickly on any model.
const maxTokens = 128

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "llm-manager server address (host:port)")
	prompt := flag.String("prompt", "Explain in two sentences what a gRPC deadline is.", "prompt to send")
	timeout := flag.Duration("timeout", 60*time.Second, "deadline for all calls together")
	traced := flag.Bool("trace", true, "trace the calls with OpenTelemetry (W3C traceparent); export the peer's spans by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set")
	tools := flag.Bool("tools", false, "do a tool round trip (query_metrics) instead: print the model's call, send the tool's result back, print the final answer")
	structured := flag.Bool("structured", false, "ask for structured output (JSON conforming to -schema) instead, and print it")
	schema := flag.String("schema", "", "with -structured: the JSON Schema (an object schema) of the answer; default: a service description")
	useTLS := flag.Bool("tls", false, "connect over TLS, trusting the system's CAs (implied by -cacert, -cert, -key)")
	caFile := flag.String("cacert", "", "connect over TLS, trusting the CA certificate in this PEM file")
	certFile := flag.String("cert", "", "mutual TLS: the client certificate (PEM) to present, with -key")
	keyFile := flag.String("key", "", "mutual TLS: the client certificate's private key (PEM), with -cert")
	apiKeyFlag := flag.String("api-key", os.Getenv("LLM_API_KEY"), "the API key to call with, for a server with LLM_API_KEYS_FILE (default: $LLM_API_KEY)")
	flag.Parse()

	transport, err := transportOption(*useTLS, *caFile, *certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}

	promptSet := false
	flag.Visit(func(f *flag.Flag) { promptSet = promptSet || f.Name == "prompt" })
	var chosen demo
	switch {
	case *tools && *structured:
		fmt.Fprintln(os.Stderr, "error: -tools and -structured are exclusive")
		os.Exit(2)
	case *tools:
		chosen = toolRoundTrip
		if !promptSet {
			*prompt = defaultToolsPrompt
		}
	case *structured:
		answerSchema, err := parseSchema(*schema)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error: -schema:", err)
			os.Exit(2)
		}
		chosen = structuredOutput(answerSchema)
		if !promptSet {
			*prompt = defaultStructuredPrompt
		}
	case *schema != "":
		fmt.Fprintln(os.Stderr, "error: -schema needs -structured")
		os.Exit(2)
	default:
		chosen = listGenerateStream
	}
	options := []grpc.DialOption{transport}
	if *apiKeyFlag != "" {
		options = append(options, grpc.WithPerRPCCredentials(apiKey(*apiKeyFlag)))
	}
	os.Exit(peer(*addr, *prompt, *timeout, *traced, chosen, options...))
}

// demo is one of the peer's walkthroughs: the calls it makes on client, with
// what they return written to out.
type demo func(ctx context.Context, client llmv1.LLMManagerServiceClient, prompt string, out io.Writer) error

// peer runs the example and returns the process exit code. It returns rather
// than exits so that the tracer provider is shut down, flushing any spans
// still to be exported, on every path. The options go to the connection (the
// transport's credentials, an API key's per-call credentials).
func peer(addr, prompt string, timeout time.Duration, traced bool, chosen demo, options ...grpc.DialOption) int {
	// The deadline travels with every call: the server stops its work for
	// the call (including the upstream model request) once it passes.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()

	var err error
	if traced {
		provider, setupErr := newTracerProvider(ctx)
		if setupErr != nil {
			fmt.Fprintln(os.Stderr, "error: set up tracing:", setupErr)
			return 1
		}
		defer shutdownTracerProvider(provider)
		err = runTracedDemo(ctx, provider, addr, prompt, out, chosen, options...)
	} else {
		err = callServer(ctx, addr, prompt, out, chosen, options...)
	}
	if err != nil {
		out.Flush()
		fmt.Fprintln(os.Stderr, describe(err))
		return 1
	}
	return 0
}

// run calls ListModels, Generate and StreamGenerate on the server at addr and
// writes what they return to out. Streamed text is written, and out flushed
// when it can be, as each chunk arrives. It does not trace the calls; see
// runTraced.
func run(ctx context.Context, addr, prompt string, out io.Writer) error {
	return callServer(ctx, addr, prompt, out, listGenerateStream)
}

// callServer dials addr with the extra options given (runTraced adds its
// stats handler; a transportOption given replaces the plaintext default, as
// the last WithTransportCredentials wins) and runs the demo on the connection.
func callServer(ctx context.Context, addr, prompt string, out io.Writer, chosen demo, options ...grpc.DialOption) error {
	options = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, options...)
	conn, err := grpc.NewClient(addr, options...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	return chosen(ctx, llmv1.NewLLMManagerServiceClient(conn), prompt, out)
}

// listGenerateStream is the default walkthrough: ListModels, Generate, then
// StreamGenerate, printing the stream chunk by chunk.
func listGenerateStream(ctx context.Context, client llmv1.LLMManagerServiceClient, prompt string, out io.Writer) error {
	models, err := client.ListModels(ctx, &llmv1.ListModelsRequest{})
	if err != nil {
		return &callError{rpc: "ListModels", err: err}
	}
	fmt.Fprintln(out, "models:")
	for _, model := range models.GetModels() {
		fmt.Fprintf(out, "  %s  %s  context_window=%d  %s\n",
			model.GetName(), model.GetProvider(), model.GetContextWindow(), model.GetHealthState())
	}

	preferences := &llmv1.GenerationPreferences{MaxTokens: proto.Int32(maxTokens)}
	answer, err := client.Generate(ctx, &llmv1.GenerateRequest{Prompt: prompt, Preferences: preferences})
	if err != nil {
		return &callError{rpc: "Generate", err: err}
	}
	fmt.Fprintln(out, "generate:")
	fmt.Fprintf(out, "  text: %s\n", strings.TrimSpace(answer.GetText()))
	fmt.Fprintf(out, "  model: %s\n", answer.GetModel())
	fmt.Fprintf(out, "  %s finish_reason=%s\n", formatUsage(answer.GetUsage()), answer.GetFinishReason())
	fmt.Fprintf(out, "  %s\n", formatMetadata(answer.GetMetadata()))

	// The stream bypasses the response cache so that its text is really
	// generated incrementally rather than replayed from Generate's answer.
	stream, err := client.StreamGenerate(ctx, &llmv1.StreamGenerateRequest{
		Prompt:       prompt,
		Preferences:  preferences,
		CacheControl: &llmv1.CacheControl{NoCache: true},
	})
	if err != nil {
		return &callError{rpc: "StreamGenerate", err: err}
	}
	fmt.Fprint(out, "stream: ")
	var last *llmv1.StreamGenerateResponse
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintln(out)
			return &callError{rpc: "StreamGenerate", err: err}
		}
		if text := chunk.GetText(); text != "" {
			fmt.Fprint(out, text)
			flush(out)
		}
		last = chunk
	}
	fmt.Fprintln(out)
	if last == nil {
		return errors.New("StreamGenerate: the stream ended without a message")
	}
	fmt.Fprintf(out, "  model: %s\n", last.GetModel())
	fmt.Fprintf(out, "  %s finish_reason=%s\n", formatUsage(last.GetUsage()), last.GetFinishReason())
	fmt.Fprintf(out, "  %s time_to_first_token_ms=%d\n",
		formatMetadata(last.GetMetadata()), last.GetMetadata().GetTimeToFirstTokenMs())
	return nil
}

// flush pushes buffered output to the terminal, for writers that buffer.
func flush(out io.Writer) {
	if flusher, ok := out.(interface{ Flush() error }); ok {
		_ = flusher.Flush()
	}
}

func formatUsage(usage *llmv1.Usage) string {
	return fmt.Sprintf("usage: prompt_tokens=%d completion_tokens=%d total_tokens=%d cost_usd=%g",
		usage.GetPromptTokens(), usage.GetCompletionTokens(), usage.GetTotalTokens(), usage.GetCostUsd())
}

func formatMetadata(metadata *llmv1.ResponseMetadata) string {
	return fmt.Sprintf("latency_ms=%d cached=%t model_chain=%v fallback_used=%t request_id=%s",
		metadata.GetLatencyMs(), metadata.GetCached(), metadata.GetModelChain(),
		metadata.GetFallbackUsed(), metadata.GetRequestId())
}

// callError records which RPC failed, keeping the gRPC status error intact.
type callError struct {
	rpc string
	err error
}

func (e *callError) Error() string { return e.rpc + ": " + e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// describe renders a failed call as its gRPC code, message and the reason of
// its google.rpc.ErrorInfo detail (plus any other standard details).
func describe(err error) string {
	var call *callError
	if !errors.As(err, &call) {
		return "error: " + err.Error()
	}
	st := status.Convert(call.err)
	var text strings.Builder
	fmt.Fprintf(&text, "%s failed\n  code: %s\n  message: %s", call.rpc, st.Code(), st.Message())
	for _, detail := range st.Details() {
		switch detail := detail.(type) {
		case *errdetails.ErrorInfo:
			fmt.Fprintf(&text, "\n  reason: %s (domain %s)", detail.GetReason(), detail.GetDomain())
			for _, key := range slices.Sorted(maps.Keys(detail.GetMetadata())) {
				fmt.Fprintf(&text, "\n    %s: %s", key, detail.GetMetadata()[key])
			}
		case *errdetails.BadRequest:
			for _, violation := range detail.GetFieldViolations() {
				fmt.Fprintf(&text, "\n  field %s: %s", violation.GetField(), violation.GetDescription())
			}
		case *errdetails.RetryInfo:
			fmt.Fprintf(&text, "\n  retry after: %s", detail.GetRetryDelay().AsDuration())
		}
	}
	return text.String()
}
