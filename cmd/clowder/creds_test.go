package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// Without username/password in the config, the credentials for the
// upstream's host in ~/.docker/config.json are used (found by the URL's host).
func TestDockerConfigCredentials(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true, Username: "alice", Password: "s3cret"})
	testutil.PushImage(t, reg.DirectHost, "private/img", "1", 1, 512)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: corp, url: 'http://%s'}\n", reg.Host))

	pull := func(dockerConfig string) (string, error) {
		cmd := clowderCmd(context.Background(), "pull", "--config", cfg, "--root", t.TempDir(), "corp/private/img:1")
		cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+dockerConfig)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	empty := t.TempDir()
	if out, err := pull(empty); err == nil {
		t.Fatalf("pull without credentials succeeded:\n%s", out)
	}
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"auths":{"%s":{"auth":"%s"}}}`, reg.Host, auth)), 0o600)
	if out, err := pull(dir); err != nil || !strings.Contains(out, "pulled corp/private/img@") {
		t.Fatalf("pull with ~/.docker/config.json credentials = %v\n%s", err, out)
	}
}
