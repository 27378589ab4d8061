package config

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Storage backends.
const (
	StorageLocal = "local"
	StorageS3    = "s3"
)

// DefaultLeaseTTL is how long a replica's fill lease lives unless renewed.
const DefaultLeaseTTL = 15 * time.Second

// Storage selects where the cache lives: the OCI layout under root (local,
// the default) or an S3-compatible bucket shared by several replicas.
type Storage struct {
	// Type is local (default) or s3.
	Type string `yaml:"type"`
	// S3 locates the bucket when Type is s3.
	S3 S3 `yaml:"s3"`
	// LeaseTTL is how long a fill lease in the bucket lives without
	// renewal: the time a replica waits before taking over the fill of a
	// replica that died. Default 15s.
	LeaseTTL Duration `yaml:"lease_ttl"`
}

// S3 is an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, SeaweedFS).
type S3 struct {
	Endpoint string `yaml:"endpoint"` // http(s)://host[:port]
	Bucket   string `yaml:"bucket"`
	Region   string `yaml:"region"`
	// Prefix is a key prefix inside the bucket ("" or ending in "/").
	Prefix string `yaml:"prefix"`
	// AccessKey and SecretKey default to $AWS_ACCESS_KEY_ID and
	// $AWS_SECRET_ACCESS_KEY.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
}

// Lease returns storage.lease_ttl or its default.
func (s Storage) Lease() time.Duration {
	if s.LeaseTTL == 0 {
		return DefaultLeaseTTL
	}
	return time.Duration(s.LeaseTTL)
}

func (c *Config) validateStorage() error {
	s := &c.Storage
	if s.Type == "" {
		s.Type = StorageLocal
	}
	switch s.Type {
	case StorageLocal:
		if s.S3 != (S3{}) {
			return fmt.Errorf("storage.s3: set, but storage.type is %q (want s3)", s.Type)
		}
	case StorageS3:
		if s.S3.AccessKey == "" {
			s.S3.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
		}
		if s.S3.SecretKey == "" {
			s.S3.SecretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
		}
		if s.S3.Region == "" {
			s.S3.Region = "us-east-1"
		}
		if p, err := url.Parse(s.S3.Endpoint); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") {
			return fmt.Errorf("storage.s3.endpoint: %q is not an http(s) URL of a host (like http://127.0.0.1:8333)", s.S3.Endpoint)
		}
		if !validBucket(s.S3.Bucket) {
			return fmt.Errorf("storage.s3.bucket: %q is not an S3 bucket name (3-63 lower-case letters, digits, '.', '-')", s.S3.Bucket)
		}
		if p := s.S3.Prefix; p != "" && (!strings.HasSuffix(p, "/") || strings.HasPrefix(p, "/") || strings.Contains(p, "..")) {
			return fmt.Errorf("storage.s3.prefix: %q must end in \"/\" and not start with one", p)
		}
		if s.S3.AccessKey == "" || s.S3.SecretKey == "" {
			return fmt.Errorf("storage.s3.access_key: access_key and secret_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) are required")
		}
	default:
		return fmt.Errorf("storage.type: %q is not one of local, s3", s.Type)
	}
	if s.LeaseTTL < 0 || (s.LeaseTTL != 0 && time.Duration(s.LeaseTTL) < time.Second) {
		return fmt.Errorf("storage.lease_ttl: %s is below 1s", time.Duration(s.LeaseTTL))
	}
	if s.Type == StorageS3 && c.AdvertiseURL() == "" {
		return fmt.Errorf("advertise: required with storage.type s3 when listen (%s) is a wildcard address: how other replicas reach this one, like http://10.0.0.5:5000", c.Listen)
	}
	if c.Advertise != "" {
		if s.Type != StorageS3 {
			return fmt.Errorf("advertise: only meaningful with storage.type s3")
		}
		if p, err := url.Parse(c.Advertise); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			return fmt.Errorf("advertise: %q is not an http(s) URL of this replica (like http://10.0.0.5:5000)", c.Advertise)
		}
		c.Advertise = strings.TrimSuffix(c.Advertise, "/")
	}
	if c.LocalCacheSize < 0 {
		return fmt.Errorf("local_cache_size: %d is negative", c.LocalCacheSize)
	}
	if c.LocalCacheSize != 0 && s.Type != StorageS3 {
		return fmt.Errorf("local_cache_size: only meaningful with storage.type s3 (the local backend keeps everything under root)")
	}
	return nil
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '-') {
			return false
		}
	}
	return b[0] != '.' && b[0] != '-' && b[len(b)-1] != '.' && b[len(b)-1] != '-'
}

// AdvertiseURL returns advertise, else http://<listen> when listen names a
// host (not a wildcard), else "".
func (c *Config) AdvertiseURL() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	host, port, err := splitHostPort(c.Listen)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		return ""
	}
	scheme := "http"
	if c.TLSCert != "" {
		scheme = "https"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + strconv.Itoa(port)
}
