// streamload drives streaming calls at a fixed concurrency and measures, per call, the time to
// the first chunk and to the end of the stream. It speaks both sides of the benchmark:
//
//	-kind http : POST an OpenAI chat body with "stream": true, read the SSE reply
//	             (first chunk = first "data:" event; end = "data: [DONE]")
//	-kind grpc : a server-streaming gRPC call with a pre-encoded request (raw bytes codec, so
//	             no generated stubs are needed); first chunk = first message
//
// Every run is bounded in count (-n) and time (-d). Prints one JSON object.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// rawCodec passes pre-encoded protobuf bytes through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

type sample struct {
	ttfc, total time.Duration
	chunks      int
}

type result struct {
	Kind        string    `json:"kind"`
	Concurrency int       `json:"concurrency"`
	Connections int       `json:"connections"`
	Count       int       `json:"count"`
	Errors      int       `json:"errors"`
	ErrorSample []string  `json:"error_sample"`
	Seconds     float64   `json:"seconds"`
	RPS         float64   `json:"rps"`
	TTFCms      quantiles `json:"ttfc_ms"`
	TotalMs     quantiles `json:"total_ms"`
	Chunks      float64   `json:"chunks_per_stream"`
}

type quantiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
}

func quant(values []time.Duration) quantiles {
	if len(values) == 0 {
		return quantiles{}
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	at := func(p float64) float64 {
		i := int(p * float64(len(values)-1))
		return float64(values[i]) / 1e6
	}
	var sum time.Duration
	for _, v := range values {
		sum += v
	}
	return quantiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Mean: float64(sum) / float64(len(values)) / 1e6}
}

type caller func(ctx context.Context, worker int) (sample, error)

func httpCaller(url, body string, concurrency int) caller {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		MaxConnsPerHost:     0,
		IdleConnTimeout:     60 * time.Second,
	}
	client := &http.Client{Transport: transport}
	payload := []byte(body)
	return func(ctx context.Context, _ int) (sample, error) {
		started := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
		if err != nil {
			return sample{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return sample{}, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			io.Copy(io.Discard, resp.Body)
			return sample{}, fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		reader := bufio.NewReaderSize(resp.Body, 16384)
		var s sample
		done := false
		for {
			line, err := reader.ReadString('\n')
			if strings.HasPrefix(line, "data:") {
				data := strings.TrimSpace(line[5:])
				if data == "[DONE]" {
					done = true
				} else {
					if s.chunks == 0 {
						s.ttfc = time.Since(started)
					}
					s.chunks++
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return sample{}, err
			}
		}
		s.total = time.Since(started)
		if !done {
			return sample{}, errors.New("stream ended without [DONE]")
		}
		return s, nil
	}
}

func grpcCaller(addr, method string, request []byte, connections int) (caller, func(), error) {
	conns := make([]*grpc.ClientConn, connections)
	for i := range conns {
		conn, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			return nil, nil, err
		}
		conns[i] = conn
	}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	desc := &grpc.StreamDesc{ServerStreams: true}
	return func(ctx context.Context, worker int) (sample, error) {
		started := time.Now()
		stream, err := conns[worker%len(conns)].NewStream(ctx, desc, method)
		if err != nil {
			return sample{}, err
		}
		req := request
		if err := stream.SendMsg(&req); err != nil {
			return sample{}, err
		}
		if err := stream.CloseSend(); err != nil {
			return sample{}, err
		}
		var s sample
		for {
			var msg []byte
			err := stream.RecvMsg(&msg)
			if err == io.EOF {
				break
			}
			if err != nil {
				return sample{}, err
			}
			if s.chunks == 0 {
				s.ttfc = time.Since(started)
			}
			s.chunks++
		}
		s.total = time.Since(started)
		return s, nil
	}, closeAll, nil
}

func run(call caller, concurrency, maxCount int, duration, timeout time.Duration) ([]sample, []error, time.Duration) {
	var issued int64
	var mu sync.Mutex
	samples := make([]sample, 0, 1024)
	var errs []error
	deadline := time.Now().Add(duration)
	started := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(worker int) {
			defer wg.Done()
			for time.Now().Before(deadline) && atomic.AddInt64(&issued, 1) <= int64(maxCount) {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				s, err := call(ctx, worker)
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					samples = append(samples, s)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return samples, errs, time.Since(started)
}

func main() {
	kind := flag.String("kind", "grpc", "http or grpc")
	target := flag.String("target", "", "URL (http) or host:port (grpc)")
	body := flag.String("body", "", "JSON body (http)")
	requestB64 := flag.String("request-b64", "", "protobuf request, base64 (grpc)")
	method := flag.String("method", "/llm_manager.v1.LLMManagerService/StreamGenerate", "gRPC method (grpc)")
	concurrency := flag.Int("c", 1, "concurrent streams")
	connections := flag.Int("connections", 1, "gRPC connections (grpc)")
	maxCount := flag.Int("n", 100000, "at most this many calls")
	duration := flag.Duration("d", 5*time.Second, "stop issuing calls after this long")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up run first")
	timeout := flag.Duration("timeout", 20*time.Second, "per-call timeout")
	flag.Parse()

	var call caller
	connCount := 0
	switch *kind {
	case "http":
		call = httpCaller(*target, *body, *concurrency)
	case "grpc":
		request, err := base64.StdEncoding.DecodeString(*requestB64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad -request-b64:", err)
			os.Exit(2)
		}
		c, closeAll, err := grpcCaller(*target, *method, request, *connections)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer closeAll()
		call = c
		connCount = *connections
	default:
		fmt.Fprintln(os.Stderr, "-kind must be http or grpc")
		os.Exit(2)
	}
	if *warmup > 0 {
		run(call, *concurrency, *maxCount, *warmup, *timeout)
	}
	samples, errs, elapsed := run(call, *concurrency, *maxCount, *duration, *timeout)
	ttfc := make([]time.Duration, len(samples))
	total := make([]time.Duration, len(samples))
	chunks := 0
	for i, s := range samples {
		ttfc[i], total[i] = s.ttfc, s.total
		chunks += s.chunks
	}
	res := result{
		Kind: *kind, Concurrency: *concurrency, Connections: connCount, Count: len(samples), Errors: len(errs),
		Seconds: elapsed.Seconds(), RPS: float64(len(samples)) / elapsed.Seconds(),
		TTFCms: quant(ttfc), TotalMs: quant(total),
	}
	if len(samples) > 0 {
		res.Chunks = float64(chunks) / float64(len(samples))
	}
	seen := map[string]bool{}
	for _, e := range errs {
		if msg := e.Error(); !seen[msg] && len(res.ErrorSample) < 5 {
			seen[msg] = true
			res.ErrorSample = append(res.ErrorSample, msg)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
