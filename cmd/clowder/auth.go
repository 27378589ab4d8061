package main

import (
	"fmt"
	"os"
	"time"

	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/server"
)

// newAuth reads the auth config (and its htpasswd file); nil when client
// authentication is off.
func newAuth(c config.Auth) (*server.Auth, error) {
	if !c.Enabled() {
		return nil, nil
	}
	ac := server.AuthConfig{
		Users:      map[string]string{},
		Tokens:     map[string]string{},
		OllamaKeys: map[string]string{},
		Groups:     c.Groups,
		Rules:      c.Rules,
		Anonymous:  c.Anonymous,
		Secret:     []byte(c.TokenSecret),
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
