package upstream

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	soon := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		status int
		after  string
		want   time.Duration
		ok     bool
	}{
		{429, "10", 10 * time.Second, true},
		{503, " 2 ", 2 * time.Second, true},
		{429, "", 0, false},
		{429, "-1", 0, false},
		{429, "soon", 0, false},
		{500, "10", 0, false},
		{429, "99999999999999", (1 << 20) * time.Second, true},
	}
	for _, c := range cases {
		got, ok := (&Error{Status: c.status, RetryAfter: c.after}).RetryDelay()
		if got != c.want || ok != c.ok {
			t.Errorf("RetryDelay(%d, %q) = %v, %v; want %v, %v", c.status, c.after, got, ok, c.want, c.ok)
		}
	}
	if got, ok := (&Error{Status: 429, RetryAfter: soon}).RetryDelay(); !ok || got < 80*time.Second || got > 90*time.Second {
		t.Errorf("RetryDelay(HTTP date 90 s ahead) = %v, %v", got, ok)
	}
}
