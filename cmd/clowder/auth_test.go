package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"

	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/server"
)

// Replicas of one s3 store without token_secret take each other's tokens
// (the key comes from the bucket secret they share); processes on local
// stores without it do not (each picks a random key).
func TestReplicasShareTokenKey(t *testing.T) {
	for _, c := range []struct {
		storage string
		want    int
	}{{config.StorageS3, http.StatusOK}, {config.StorageLocal, http.StatusUnauthorized}} {
		cfg := &config.Config{
			Auth:    config.Auth{Tokens: []config.StaticToken{{Token: "s3cret-token", User: "ci"}}},
			Storage: config.Storage{Type: c.storage, S3: config.S3{SecretKey: "bucket-secret"}},
		}
		var srvs []*httptest.Server
		for range 2 {
			a, err := newAuth(cfg)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(server.New(nil, zerolog.Nop(), server.Options{Auth: a}))
			defer srv.Close()
			srvs = append(srvs, srv)
		}
		req, _ := http.NewRequest("GET", srvs[0].URL+"/token?service=x", nil)
		req.SetBasicAuth("ci", "s3cret-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			Token string `json:"token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || tok.Token == "" {
			t.Fatalf("%s: token from replica 1 = %d, %v", c.storage, resp.StatusCode, err)
		}
		req, _ = http.NewRequest("GET", srvs[1].URL+"/v2/", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s storage: replica 1's token at replica 2 = %d, want %d", c.storage, resp.StatusCode, c.want)
		}
	}
}
