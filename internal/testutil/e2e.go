package testutil

import (
	"net"
	"os"
	"testing"
)

// NeedTool skips t unless CLOWDER_E2E is set; then the executable named by
// the environment variable env (set by make e2e) must exist, and its path
// is returned.
func NeedTool(t testing.TB, env string) string {
	t.Helper()
	if os.Getenv("CLOWDER_E2E") == "" {
		t.Skip("end-to-end test: run with make e2e (CLOWDER_E2E=1)")
	}
	v := os.Getenv(env)
	if v == "" {
		t.Fatalf("$%s is not set (make e2e sets it)", env)
	}
	if _, err := os.Stat(v); err != nil {
		t.Fatalf("$%s: %v (run make tools)", env, err)
	}
	return v
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
