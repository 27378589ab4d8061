// Package config holds Clowder's configuration tree, the embedded default
// (default.yaml) and its validation. Only cmd/ reads files, flags and the
// environment; every other package takes a *Config.
//
// Decoding is strict: an unknown key, a bad URL or two default upstreams stop
// the process with a one-line error that names the key.
package config
