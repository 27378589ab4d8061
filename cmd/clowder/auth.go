package main

import (
	"fmt"
	"os"
	"time"

	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/server"
)

// newAuth reads the auth config (and its htpasswd file); nil when client
// authentication is off. Without token_secret, replicas of one s3 store
// derive the signing key from the bucket secret they share, so a token (or
// a presigned blob URL) one replica issues is taken by the others behind
// the same load balancer; a lone process picks a random one.
func newAuth(cfg *config.Config) (*server.Auth, error) {
	c := cfg.Auth
	if !c.Enabled() {
		return nil, nil
	}
	secret := []byte(c.TokenSecret)
	if len(secret) == 0 && cfg.Storage.Type == config.StorageS3 {
		secret = s3store.SharedKey(cfg.Storage.S3.SecretKey, "clowder token v1")
	}
	ac := server.AuthConfig{
		Users:      map[string]string{},
		Tokens:     map[string]string{},
		OllamaKeys: map[string]string{},
		Groups:     c.Groups,
		Rules:      c.Rules,
		Anonymous:  c.Anonymous,
		Secret:     secret,
		TTL:        time.Duration(c.TokenTTL),
	}
	if c.Htpasswd != "" {
		b, err := os.ReadFile(c.Htpasswd)
		if err != nil {
			return nil, fmt.Errorf("auth.htpasswd: %w", err)
		}
		if ac.Users, err = server.ParseHtpasswd(b); err != nil {
			return nil, fmt.Errorf("auth.htpasswd %s: %w", c.Htpasswd, err)
		}
	}
	for _, t := range c.Tokens {
		ac.Tokens[t.Token] = t.User
	}
	for i, k := range c.OllamaKeys {
		id, err := server.OllamaKeyID(k.Key)
		if err != nil {
			return nil, fmt.Errorf("auth.ollama_keys[%d]: %w", i, err)
		}
		ac.OllamaKeys[id] = k.User
	}
	return server.NewAuth(ac), nil
}
