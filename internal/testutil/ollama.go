package testutil

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// OllamaModel is a model as registry.ollama.ai serves it: a Docker schema2
// manifest whose config is ollama's own JSON and whose layers carry
// application/vnd.ollama.image.* media types.
type OllamaModel struct {
	Manifest []byte
	Blobs    map[digest.Digest][]byte
	// Model is the digest of the GGUF model layer.
	Model digest.Digest
}

// GGUF returns a well-formed GGUF v3 file: a few metadata keys and one F32
// tensor of n floats (random bytes), aligned as the format requires.
func GGUF(n int) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	str := func(s string) {
		binary.Write(&b, le, uint64(len(s)))
		b.WriteString(s)
	}
	b.WriteString("GGUF")
	binary.Write(&b, le, uint32(3)) // version
	binary.Write(&b, le, uint64(1)) // tensors
	binary.Write(&b, le, uint64(3)) // metadata keys
	str("general.architecture")
	binary.Write(&b, le, uint32(8)) // string
	str("llama")
	str("general.name")
	binary.Write(&b, le, uint32(8))
	str("clowder-test")
	str("general.alignment")
	binary.Write(&b, le, uint32(4)) // uint32
	binary.Write(&b, le, uint32(32))
	// tensor info
	str("weights")
	binary.Write(&b, le, uint32(1)) // n_dims
	binary.Write(&b, le, uint64(n))
	binary.Write(&b, le, uint32(0)) // F32
	binary.Write(&b, le, uint64(0)) // offset in the data section
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	data := make([]byte, 4*n)
	_, _ = rand.Read(data)
	b.Write(data)
	return b.Bytes()
}

// NewOllamaModel builds a model whose GGUF layer holds floats float32s.
func NewOllamaModel(floats int) *OllamaModel { return NewOllamaModelFrom(GGUF(floats)) }

// NewOllamaModelFrom builds a model around a given GGUF file.
func NewOllamaModelFrom(gguf []byte) *OllamaModel {
	m := &OllamaModel{Blobs: map[digest.Digest][]byte{}}
	type desc struct {
		MediaType string        `json:"mediaType"`
		Digest    digest.Digest `json:"digest"`
		Size      int64         `json:"size"`
	}
	add := func(mt string, b []byte) desc {
		d := digest.FromBytes(b)
		m.Blobs[d] = b
		return desc{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	layers := []desc{
		add("application/vnd.ollama.image.model", gguf),
		add("application/vnd.ollama.image.template", []byte("{{ .System }}\n{{ .Prompt }}")),
		add("application/vnd.ollama.image.license", []byte("Test licence: do what you like.\n")),
		add("application/vnd.ollama.image.params", []byte(`{"stop":["<|im_end|>"],"temperature":0.7}`)),
	}
	m.Model = layers[0].Digest
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, l.Digest.String())
	}
	cfg, _ := json.Marshal(map[string]any{
		"model_format": "gguf", "model_family": "llama", "model_families": []string{"llama"},
		"model_type": "1M", "file_type": "F32", "architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	c := add("application/vnd.docker.container.image.v1+json", cfg)
	m.Manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.docker.distribution.manifest.v2+json",
		"config":        c,
		"layers":        layers,
	})
	return m
}

// OllamaRegistry mimics registry.ollama.ai's quirks on loopback: no /v2/
// ping, manifests as text/plain without Content-Length or digest, no
// manifest HEAD or by-digest fetch, MANIFEST_INVALID without the Docker v2
// Accept, and blobs answered with a 307 to a second "object store" listener
// whose signed URLs expire. Any request a proxy should not send fails the
// test.
type OllamaRegistry struct {
	t      testing.TB
	Server *httptest.Server
	Store  *httptest.Server
	Host   string
	Expiry time.Duration
	key    []byte
	mu     sync.Mutex
	models map[string]*OllamaModel // "library/m:tag"
	blobs  map[digest.Digest][]byte
	gets   map[string]int // object-store full GETs per digest
	ranged map[string]int
}

// NewOllamaRegistry starts the fake registry and object store.
func NewOllamaRegistry(t testing.TB) *OllamaRegistry {
	t.Helper()
	o := &OllamaRegistry{t: t, Expiry: 3 * time.Second, key: []byte("k"), models: map[string]*OllamaModel{},
		blobs: map[digest.Digest][]byte{}, gets: map[string]int{}, ranged: map[string]int{}}
	o.Store = httptest.NewServer(http.HandlerFunc(o.serveStore))
	t.Cleanup(o.Store.Close)
	o.Server = httptest.NewServer(http.HandlerFunc(o.serveRegistry))
	t.Cleanup(o.Server.Close)
	o.Host = strings.TrimPrefix(o.Server.URL, "http://")
	return o
}

// Add publishes a model as name:tag (name like library/m).
func (o *OllamaRegistry) Add(nameTag string, m *OllamaModel) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.models[nameTag] = m
	for d, b := range m.Blobs {
		o.blobs[d] = b
	}
}

// StoreGets returns the object store's full (non-range) and ranged GETs of d.
func (o *OllamaRegistry) StoreGets(d digest.Digest) (full, ranged int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gets[d.Encoded()], o.ranged[d.Encoded()]
}

func (o *OllamaRegistry) sign(hexd string, exp int64) string {
	h := hmac.New(sha256.New, o.key)
	fmt.Fprintf(h, "%s:%d", hexd, exp)
	return hex.EncodeToString(h.Sum(nil))
}

func (o *OllamaRegistry) serveRegistry(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
	if !strings.HasPrefix(r.URL.Path, "/v2/") || len(segs) != 4 {
		o.t.Errorf("ollama registry: unexpected request %s %s (no /v2/ ping, no catalog, no tags)", r.Method, r.URL)
		http.NotFound(w, r)
		return
	}
	name, kind, ref := segs[0]+"/"+segs[1], segs[2], segs[3]
	switch {
	case kind == "manifests" && r.Method == http.MethodGet:
		if strings.HasPrefix(ref, "sha256:") {
			o.t.Errorf("ollama registry: manifest by digest %s (unsupported upstream)", ref)
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Accept") != "application/vnd.docker.distribution.manifest.v2+json" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}`)
			return
		}
		o.mu.Lock()
		m := o.models[name+":"+ref]
		o.mu.Unlock()
		if m == nil {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		// Two writes with a flush between: chunked, no Content-Length.
		half := len(m.Manifest) / 2
		w.Write(m.Manifest[:half])
		w.(http.Flusher).Flush()
		w.Write(m.Manifest[half:])
	case kind == "manifests":
		o.t.Errorf("ollama registry: %s on a manifest (no usable HEAD upstream)", r.Method)
		w.WriteHeader(http.StatusMethodNotAllowed)
	case kind == "blobs" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		d, err := digest.Parse(ref)
		o.mu.Lock()
		_, ok := o.blobs[d]
		o.mu.Unlock()
		if err != nil || !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		exp := time.Now().Add(o.Expiry).Unix()
		loc := fmt.Sprintf("%s/ollama/%s?exp=%d&sig=%s", o.Store.URL, d.Encoded(), exp, o.sign(d.Encoded(), exp))
		http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
	default:
		o.t.Errorf("ollama registry: unexpected request %s %s", r.Method, r.URL)
		http.NotFound(w, r)
	}
}

func (o *OllamaRegistry) serveStore(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		o.t.Errorf("object store got an Authorization header: credentials leaked to another host")
	}
	hexd := strings.TrimPrefix(r.URL.Path, "/ollama/")
	exp, _ := strconv.ParseInt(r.URL.Query().Get("exp"), 10, 64)
	if !hmac.Equal([]byte(r.URL.Query().Get("sig")), []byte(o.sign(hexd, exp))) || time.Now().Unix() > exp {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
		return
	}
	o.mu.Lock()
	b, ok := o.blobs[digest.NewDigestFromEncoded(digest.SHA256, hexd)]
	if r.Method == http.MethodGet {
		if r.Header.Get("Range") == "" {
			o.gets[hexd]++
		} else {
			o.ranged[hexd]++
		}
	}
	o.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// OCI returns the model repackaged as an OCI image manifest (same config and
// layers, ollama layer media types), as a team would push it to an ordinary
// OCI registry.
func (m *OllamaModel) OCI() []byte {
	var doc map[string]any
	_ = json.Unmarshal(m.Manifest, &doc)
	doc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
	b, _ := json.Marshal(doc)
	return b
}
