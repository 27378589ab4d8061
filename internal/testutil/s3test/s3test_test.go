package s3test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The s3 backend's correctness rests on conditional writes; a fake that
// ignored them would let its tests pass for the wrong reason.
func TestEngineHonoursConditionalWrites(t *testing.T) {
	ep := Get(t)
	c, err := minio.New(strings.TrimPrefix(ep.URL, "http://"), &minio.Options{Creds: credentials.NewStaticV4(ep.AccessKey, ep.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := "s3test/" + t.Name()
	put := func(body string, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
		return c.PutObject(ctx, Bucket, key, strings.NewReader(body), int64(len(body)), opts)
	}
	create := minio.PutObjectOptions{}
	create.SetMatchETagExcept("*")
	first, err := put("one", create)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { c.RemoveObject(ctx, Bucket, key, minio.RemoveObjectOptions{}) })
	if _, err := put("two", create); minio.ToErrorResponse(err).StatusCode != 412 {
		t.Errorf("second If-None-Match: * = %v, want 412", err)
	}
	stale := minio.PutObjectOptions{}
	stale.SetMatchETag(`"0123456789abcdef0123456789abcdef"`)
	if _, err := put("three", stale); minio.ToErrorResponse(err).StatusCode != 412 {
		t.Errorf("If-Match on a stale ETag = %v, want 412", err)
	}
	current := minio.PutObjectOptions{}
	current.SetMatchETag(first.ETag)
	if _, err := put("four", current); err != nil {
		t.Errorf("If-Match on the current ETag: %v", err)
	}
	obj, err := c.GetObject(ctx, Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil || string(b) != "four" {
		t.Errorf("object = %q, %v; want the one write whose condition held last", b, err)
	}
}
