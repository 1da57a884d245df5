// Package testenv gives the end-to-end tests the address of a running
// llm-manager server.
package testenv

import (
	"os"
	"testing"
)

// AddrVar names the environment variable holding the server's host:port.
const AddrVar = "LLM_MANAGER_ADDR"

// Addr returns the server address from LLM_MANAGER_ADDR. The end-to-end tests
// need a live server, so a missing address fails the test instead of skipping
// it: a skipped suite would pass without testing anything.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(AddrVar)
	if addr == "" {
		t.Fatalf("set %s; `make test` starts a server and sets it", AddrVar)
	}
	return addr
}
