package main

import "context"

// apiKey sends an llm-manager API key (a server with LLM_API_KEYS_FILE requires
// one) with every call, as "authorization: Bearer <key>".
type apiKey string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity is false so that the example also runs against a
// plaintext server on loopback; across a network, serve TLS (and connect with
// -tls or -cacert) so that the key never crosses it in the clear.
func (apiKey) RequireTransportSecurity() bool { return false }
