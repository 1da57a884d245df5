package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	llmv1 "github.com/llm-manager/llm-manager/clients/go/llmmanagerv1"
)

const (
	// defaultToolsPrompt is -tools' prompt unless -prompt is given.
	defaultToolsPrompt = "What is the p99 latency of checkout over the last 15 minutes?"
	// defaultStructuredPrompt is -structured's prompt unless -prompt is given.
	defaultStructuredPrompt = "The checkout service: a frontend with 3 replicas."
	// toolCallMaxTokens bounds the answer that carries the tool call: the
	// arguments must fit, or the call is cut and fails validation.
	toolCallMaxTokens = 400
)

// queryMetricsParameters is the JSON Schema of query_metrics' arguments. The
// server checks the model's arguments against it before they reach us.
var queryMetricsParameters = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"metric":  map[string]any{"type": "string", "maxLength": 40, "description": "The metric, e.g. p99_latency or error_rate."},
		"minutes": map[string]any{"type": "integer", "minimum": 1, "maximum": 1440, "description": "How far back to look."},
	},
	"required":             []any{"metric", "minutes"},
	"additionalProperties": false,
}

// serviceSchema is -structured's default answer schema.
var serviceSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"service":  map[string]any{"type": "string", "maxLength": 40},
		"replicas": map[string]any{"type": "integer", "minimum": 1, "maximum": 9},
		"tier":     map[string]any{"enum": []any{"frontend", "backend", "batch"}},
	},
	"required":             []any{"service", "replicas", "tier"},
	"additionalProperties": false,
}

// localTool runs one tool on the arguments the model gave and returns its
// result, any JSON value.
type localTool func(arguments map[string]any) (any, error)

// localTools are the tools the peer offers, by name.
var localTools = map[string]localTool{"query_metrics": queryMetrics}

// queryMetrics stands in for a real metrics query: it answers a fixed value
// for the metric and window the model asked about.
func queryMetrics(arguments map[string]any) (any, error) {
	metric, ok := arguments["metric"].(string)
	if !ok || metric == "" {
		return nil, errors.New("query_metrics: metric must be a non-empty string")
	}
	// Struct numbers are doubles: the schema's integer arrives as float64.
	minutes, ok := arguments["minutes"].(float64)
	if !ok || minutes != math.Trunc(minutes) {
		return nil, errors.New("query_metrics: minutes must be an integer")
	}
	return map[string]any{"metric": metric, "minutes": int(minutes), "value": 412, "unit": "ms"}, nil
}

// metricsTool describes query_metrics to the model.
func metricsTool() (*llmv1.Tool, error) {
	parameters, err := structpb.NewStruct(queryMetricsParameters)
	if err != nil {
		return nil, fmt.Errorf("query_metrics parameters: %w", err)
	}
	return &llmv1.Tool{
		Name:        "query_metrics",
		Description: "Query a telemetry metric of a service over the last N minutes.",
		Parameters:  parameters,
	}, nil
}

// asJSON renders a Struct as compact JSON with sorted keys (protojson's
// output spacing is deliberately unstable, so it is not used for printing).
func asJSON(value *structpb.Struct) string {
	text, err := json.Marshal(value.AsMap())
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(text)
}

// toolRoundTrip offers the model the query_metrics tool and requires a call,
// prints each call, runs it locally, sends the results back as ROLE_TOOL
// messages (after the assistant turn that made the calls) with tool choice
// none, and prints the final text answer.
func toolRoundTrip(ctx context.Context, client llmv1.LLMManagerServiceClient, prompt string, out io.Writer) error {
	tool, err := metricsTool()
	if err != nil {
		return err
	}
	tools := []*llmv1.Tool{tool}
	fmt.Fprintf(out, "tools: %s\n", tool.GetName())

	first, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Prompt:     prompt,
		Tools:      tools,
		ToolChoice: &llmv1.ToolChoice{Mode: llmv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED},
		Preferences: &llmv1.GenerationPreferences{
			MaxTokens:   proto.Int32(toolCallMaxTokens),
			Temperature: proto.Float64(0),
		},
	})
	if err != nil {
		return &callError{rpc: "Generate", err: err}
	}
	fmt.Fprintln(out, "generate:")
	fmt.Fprintf(out, "  model: %s\n", first.GetModel())
	fmt.Fprintf(out, "  %s finish_reason=%s\n", formatUsage(first.GetUsage()), first.GetFinishReason())
	if len(first.GetToolCalls()) == 0 {
		return fmt.Errorf("Generate: the model called no tool (finish_reason %s, text %q)", first.GetFinishReason(), first.GetText())
	}

	// The follow-up replays the chat: the question, the assistant turn with
	// its calls, then one ROLE_TOOL message per call, naming the call's id.
	messages := []*llmv1.ChatMessage{
		{Role: llmv1.Role_ROLE_USER, Content: prompt},
		{Role: llmv1.Role_ROLE_ASSISTANT, ToolCalls: first.GetToolCalls()},
	}
	for _, call := range first.GetToolCalls() {
		fmt.Fprintf(out, "  tool_call: id=%s name=%s arguments=%s\n", call.GetId(), call.GetName(), asJSON(call.GetArguments()))
		run, ok := localTools[call.GetName()]
		if !ok {
			return fmt.Errorf("the model called %q, which is not one of the peer's tools", call.GetName())
		}
		result, err := run(call.GetArguments().AsMap())
		if err != nil {
			return err
		}
		content, err := json.Marshal(result)
		if err != nil {
			return fmt.Errorf("%s result: %w", call.GetName(), err)
		}
		fmt.Fprintf(out, "  tool_result: id=%s %s\n", call.GetId(), content)
		messages = append(messages, &llmv1.ChatMessage{Role: llmv1.Role_ROLE_TOOL, ToolCallId: call.GetId(), Content: string(content)})
	}

	final, err := client.Generate(ctx, &llmv1.GenerateRequest{
		Messages:    messages,
		Tools:       tools,
		ToolChoice:  &llmv1.ToolChoice{Mode: llmv1.ToolChoiceMode_TOOL_CHOICE_MODE_NONE},
		Preferences: &llmv1.GenerationPreferences{MaxTokens: proto.Int32(maxTokens), Temperature: proto.Float64(0)},
	})
	if err != nil {
		return &callError{rpc: "Generate", err: err}
	}
	fmt.Fprintln(out, "answer:")
	fmt.Fprintf(out, "  text: %s\n", strings.TrimSpace(final.GetText()))
	fmt.Fprintf(out, "  model: %s\n", final.GetModel())
	fmt.Fprintf(out, "  %s finish_reason=%s\n", formatUsage(final.GetUsage()), final.GetFinishReason())
	fmt.Fprintf(out, "  %s\n", formatMetadata(final.GetMetadata()))
	return nil
}

// parseSchema reads -schema: a JSON object, or the default when empty.
func parseSchema(text string) (*structpb.Struct, error) {
	if strings.TrimSpace(text) == "" {
		return structpb.NewStruct(serviceSchema)
	}
	schema := &structpb.Struct{}
	if err := protojson.Unmarshal([]byte(text), schema); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	return schema, nil
}

// structuredOutput returns the demo that asks for an answer conforming to
// schema (RESPONSE_FORMAT_JSON_SCHEMA) and prints its structured_output.
func structuredOutput(schema *structpb.Struct) demo {
	return func(ctx context.Context, client llmv1.LLMManagerServiceClient, prompt string, out io.Writer) error {
		answer, err := client.Generate(ctx, &llmv1.GenerateRequest{
			Prompt: prompt,
			Preferences: &llmv1.GenerationPreferences{
				ResponseFormat: llmv1.ResponseFormat_RESPONSE_FORMAT_JSON_SCHEMA,
				ResponseSchema: schema,
				MaxTokens:      proto.Int32(maxTokens),
				Temperature:    proto.Float64(0),
			},
		})
		if err != nil {
			return &callError{rpc: "Generate", err: err}
		}
		if answer.GetStructuredOutput() == nil {
			return fmt.Errorf("Generate: the answer has no structured_output (text %q)", answer.GetText())
		}
		fmt.Fprintf(out, "structured_output: %s\n", asJSON(answer.GetStructuredOutput()))
		// text is the same JSON, as the model wrote it; compacted to one line.
		var text bytes.Buffer
		if err := json.Compact(&text, []byte(answer.GetText())); err != nil {
			return fmt.Errorf("Generate: text is not the JSON of structured_output: %w", err)
		}
		fmt.Fprintf(out, "  text: %s\n", text.String())
		fmt.Fprintf(out, "  model: %s\n", answer.GetModel())
		fmt.Fprintf(out, "  %s finish_reason=%s\n", formatUsage(answer.GetUsage()), answer.GetFinishReason())
		fmt.Fprintf(out, "  %s\n", formatMetadata(answer.GetMetadata()))
		return nil
	}
}
