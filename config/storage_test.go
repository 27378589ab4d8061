package config

import (
	"testing"
	"time"
)

const s3ok = "storage:\n  type: s3\n  s3: {endpoint: 'http://127.0.0.1:8333', bucket: clowder, access_key: k, secret_key: s}\n"

func TestStorage(t *testing.T) {
	c, err := Parse([]byte(s3ok + "local_cache_size: 2GiB\nadvertise: http://10.0.0.5:5000/\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.Type != StorageS3 || c.Storage.S3.Region != "us-east-1" || c.LocalCacheSize != 2<<30 ||
		c.AdvertiseURL() != "http://10.0.0.5:5000" || c.Storage.Lease() != DefaultLeaseTTL {
		t.Errorf("parsed %+v advertise %q lease %s", c.Storage, c.AdvertiseURL(), c.Storage.Lease())
	}
	// advertise defaults to the listen address when it names a host.
	c, err = Parse([]byte(s3ok + "listen: 10.1.2.3:5000\n"))
	if err != nil || c.AdvertiseURL() != "http://10.1.2.3:5000" {
		t.Errorf("advertise from listen = %q, %v", c.AdvertiseURL(), err)
	}
	// Credentials from the AWS environment variables.
	t.Setenv("AWS_ACCESS_KEY_ID", "envkey")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	c, err = Parse([]byte("storage:\n  type: s3\n  lease_ttl: 3s\n  s3: {endpoint: 'https://s3.example', bucket: b-1.x}\n"))
	if err != nil || c.Storage.S3.AccessKey != "envkey" || c.Storage.S3.SecretKey != "envsecret" || c.Storage.Lease() != 3*time.Second {
		t.Errorf("env credentials: %+v, %v", c, err)
	}
	if c, err := Parse([]byte("listen: 127.0.0.1:5000\n")); err != nil || c.Storage.Type != StorageLocal {
		t.Errorf("default storage = %v, %v", c, err)
	}
}

func TestStorageRefusals(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	cases := []refusal{
		{"storage: {type: nfs}\n", "storage.type"},
		{"storage:\n  s3: {bucket: x}\n", "storage.s3"},
		{"storage:\n  type: s3\n  s3: {endpoint: 'ftp://x', bucket: clowder, access_key: k, secret_key: s}\n", "storage.s3.endpoint"},
		{"storage:\n  type: s3\n  s3: {endpoint: 'http://x', bucket: Clowder_Bucket, access_key: k, secret_key: s}\n", "storage.s3.bucket"},
		{"storage:\n  type: s3\n  s3: {endpoint: 'http://x', bucket: clowder, prefix: '/abs', access_key: k, secret_key: s}\n", "storage.s3.prefix"},
		{"storage:\n  type: s3\n  s3: {endpoint: 'http://x', bucket: clowder}\n", "storage.s3.access_key"},
		{s3ok + "  lease_ttl: 10ms\n", "storage.lease_ttl"},
		{s3ok + "listen: 0.0.0.0:5000\n", "advertise: required"},
		{s3ok + "advertise: 'ftp://x'\n", "advertise"},
		{"advertise: http://10.0.0.5:5000\n", "advertise: only"},
		{"local_cache_size: 1GiB\n", "local_cache_size"},
		{s3ok + "local_cache_size: -5\n", "not a size"},
	}
	checkRefusals(t, cases)
}
