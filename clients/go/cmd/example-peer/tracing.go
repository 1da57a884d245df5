package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

const (
	// serviceName is the peer's service.name unless OTEL_SERVICE_NAME says
	// otherwise.
	serviceName = "example-peer"
	// spanName names the span that all calls of one run belong to.
	spanName = "example-peer"
	// tracerName is the instrumentation scope of that span.
	tracerName = "github.com/llm-manager/llm-manager/clients/go/cmd/example-peer"
	// shutdownTimeout bounds flushing the spans on exit; it is separate from
	// the calls' deadline, which may already have passed.
	shutdownTimeout = 5 * time.Second
)

// newTracerProvider returns an SDK tracer provider for the peer. It exports
// the peer's spans by OTLP/gRPC (batched) when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and nowhere otherwise; the
// exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself, and uses
// no TLS for an http:// endpoint. Shut the provider down before exiting so
// that the last spans are sent.
func newTracerProvider(ctx context.Context) (*sdktrace.TracerProvider, error) {
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	options := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if exporting() {
		exporter, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
		options = append(options, sdktrace.WithBatcher(exporter))
	}
	return sdktrace.NewTracerProvider(options...), nil
}

// exporting reports whether the environment asks for OTLP trace export.
func exporting() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// shutdownTracerProvider flushes and stops provider; a failure to export is
// reported on stderr but does not fail the run.
func shutdownTracerProvider(provider *sdktrace.TracerProvider) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := provider.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "warning: flush traces:", err)
	}
}

// runTraced does what run does, under one span named "example-peer" from
// provider. It first writes that span's trace id to out as the line
// "trace_id: <32 lowercase hex digits>", then makes every call with a client
// span (otelgrpc) whose context goes to the server as a W3C traceparent
// header, so the server's spans join the same trace.
func runTraced(ctx context.Context, provider trace.TracerProvider, addr, prompt string, out io.Writer) error {
	return runTracedDemo(ctx, provider, addr, prompt, out, listGenerateStream)
}

// runTracedDemo runs the chosen demo the way runTraced runs the default one.
func runTracedDemo(ctx context.Context, provider trace.TracerProvider, addr, prompt string, out io.Writer, chosen demo, options ...grpc.DialOption) (err error) {
	ctx, span := provider.Tracer(tracerName).Start(ctx, spanName)
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	traceID := span.SpanContext().TraceID()
	if !traceID.IsValid() {
		return errors.New("the tracer provider gave the span no trace id (is it a no-op provider?)")
	}
	fmt.Fprintf(out, "trace_id: %s\n", traceID)
	flush(out)

	handler := otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(provider),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
	)
	return callServer(ctx, addr, prompt, out, chosen, append(options, grpc.WithStatsHandler(handler))...)
}
