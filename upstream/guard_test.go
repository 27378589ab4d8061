package upstream

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestAddrKind(t *testing.T) {
	cases := map[string]string{
		"8.8.8.8":                "",
		"2606:4700::1111":        "",
		"127.0.0.1":              "loopback",
		"127.0.0.2":              "loopback",
		"::1":                    "loopback",
		"10.0.0.7":               "private",
		"172.16.3.4":             "private",
		"192.168.1.1":            "private",
		"fd00::1":                "private",
		"169.254.169.254":        "link-local",
		"fe80::1":                "link-local",
		"0.0.0.0":                "unspecified",
		"::":                     "unspecified",
		"100.64.0.1":             "shared (carrier-grade NAT)",
		"224.1.2.3":              "multicast",
		"255.255.255.255":        "reserved",
		"::ffff:169.254.169.254": "link-local",
		"::ffff:8.8.8.8":         "",
		"64:ff9b::7f00:1":        "loopback (NAT64)",
		"64:ff9b::808:808":       "",
		"2002:a00:1::":           "private (6to4)",
	}
	for in, want := range cases {
		if got := AddrKind(netip.MustParseAddr(in)); got != want {
			t.Errorf("AddrKind(%s) = %q, want %q", in, got, want)
		}
	}
}

func testGuard(t *testing.T) *Guard {
	t.Helper()
	g, err := NewGuard([]string{"http://127.0.0.1:5000", "https://registry.corp.lan", "https://huggingface.co"},
		[]string{"10.0.0.0/8", "192.168.1.5", "token.corp.lan", "*.cdn.lan", "[fd00::7]"})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGuardCheckURL(t *testing.T) {
	g := testGuard(t)
	cases := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:5001/token", true}, // an upstream's host, another port
		{"http://127.0.0.1/", true},           // ... and the default port
		{"http://127.0.0.2:5000/blob", false}, // another loopback address
		{"http://[::1]:5000/blob", false},     // IPv6 loopback is another host
		{"http://10.0.0.7:5001/token", true},  // allowed CIDR
		{"http://192.168.1.5/x", true},        // allowed IP
		{"http://192.168.1.6/x", false},       // its neighbour is not
		{"http://169.254.169.254/latest/meta-data", false},
		{"http://[::ffff:169.254.169.254]/", false},
		{"http://[fd00::7]:80/", true},
		{"http://[fd00::8]:80/", false},
		{"http://[64:ff9b::7f00:1]/", false},
		{"https://registry.corp.lan:5001/token", true}, // upstream host name, any port
		{"https://REGISTRY.corp.lan./v2/", true},
		{"http://token.corp.lan/token", true},
		{"http://eu.cdn.lan/blob", true},
		{"http://cdn.lan/blob", true}, // a public-looking name: checked when dialled
		{"https://cdn-lfs.hf.co/repos/x", true},
		{"http://0.0.0.0:5000/", false},
		{"http:///nohost", false},
	}
	for _, c := range cases {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		err = g.CheckURL(u)
		if (err == nil) != c.ok {
			t.Errorf("CheckURL(%s) = %v, want ok %v", c.url, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBlockedAddress) {
			t.Errorf("CheckURL(%s) = %v, not ErrBlockedAddress", c.url, err)
		}
	}
}

func TestParseAllowEntry(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/8": "cidr", "fd00::/8": "cidr", "10.0.0.7": "ip", "[::1]": "ip", "token.corp.lan": "name", "*.corp.lan": "suffix", "localhost": "name"} {
		if got, err := ParseAllowEntry(in); err != nil || got != want {
			t.Errorf("ParseAllowEntry(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "http://10.0.0.7", "10.0.0.7:5000", "*.", "a..b", "-a.b", "10.0.0.0/33", "fe80::1%eth0", "a b"} {
		if got, err := ParseAllowEntry(bad); err == nil {
			t.Errorf("ParseAllowEntry(%q) = %q, want an error", bad, got)
		}
	}
}

// A host name that is no upstream's and resolves to loopback is refused
// when dialled (the check a rebinding DNS answer cannot get around); once
// its address is allowed, the same request goes through.
func TestGuardDialChecksResolvedAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if ips, err := net.LookupIP("localhost"); err != nil || len(ips) == 0 {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	target := "http://localhost:" + port + "/"

	get := func(allow ...string) error {
		g, err := NewGuard([]string{"http://127.0.0.9:5000"}, allow)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: g.Transport(NewTransport())}
		resp, err := c.Get(target)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); !errors.Is(err, ErrBlockedAddress) {
		t.Fatalf("GET %s with localhost not allowed = %v, want ErrBlockedAddress", target, err)
	} else if !strings.Contains(err.Error(), "loopback") {
		t.Errorf("refusal %q does not say why", err)
	}
	if err := get("127.0.0.1", "::1"); err != nil {
		t.Fatalf("GET %s with its addresses allowed = %v", target, err)
	}
	if err := get("localhost"); err != nil {
		t.Fatalf("GET %s with the name allowed = %v", target, err)
	}
}

// A redirect to a refused host fails the request before it is sent; the
// error says why and is not retried.
func TestGuardRefusesRedirect(t *testing.T) {
	hits := 0
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	other.Listener = ln
	other.Start()
	defer other.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/blob?X-Amz-Signature=secret", http.StatusTemporaryRedirect)
	}))
	defer up.Close()
	g, err := NewGuard([]string{up.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: g.Transport(NewTransport())}
	_, err = c.Get(up.URL + "/v2/x/blobs/sha256:00")
	if !errors.Is(err, ErrBlockedAddress) || hits != 0 {
		t.Fatalf("redirect to 127.0.0.2 = %v, %d hits; want ErrBlockedAddress and none", err, hits)
	}
	ue := &Error{Method: "GET", URL: up.URL + "/v2/x", Err: err}
	if ue.Temporary() {
		t.Error("a refused destination is Temporary")
	}
	if !errors.Is(ue, ErrBlockedAddress) || !errors.Is(ue, ErrUnavailable) {
		t.Errorf("upstream.Error %v does not unwrap to ErrBlockedAddress and ErrUnavailable", ue)
	}
	if strings.Contains(ue.Error(), "secret") {
		t.Errorf("error %q shows the presigned URL's query", ue.Error())
	}
}

func FuzzGuardCheckURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:1/x", "http://[::ffff:127.0.0.2]/", "http://10.1.2.3", "http://a.cdn.lan", "http://[fe80::1%25eth0]/", "http://0x7f.1/", "http://2130706433/", "http://127.1/", "http://[::]/"} {
		f.Add(s)
	}
	g, err := NewGuard([]string{"http://127.0.0.1:5000"}, []string{"10.0.0.0/8", "*.cdn.lan"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		if g.CheckURL(u) != nil {
			return
		}
		// Accepted: an IP literal is public, allowed, or the upstream's.
		host := u.Hostname()
		ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if err != nil {
			return
		}
		if AddrKind(ip) != "" && !g.allowedIP(ip) && normHost(host) != "127.0.0.1" {
			t.Fatalf("CheckURL(%q) accepted %s, a %s address", s, ip, AddrKind(ip))
		}
	})
}
