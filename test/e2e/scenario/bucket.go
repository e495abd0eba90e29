package scenario

import (
	"context"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"

	"github.com/velero-etcd/velero-plugin-for-etcd/internal/osslocal/osstest"
)

// Bucket reads the backup bucket with the official OSS SDK, independently of
// the plugin, to check what Velero and the plugin left there.
type Bucket struct {
	Name   string
	client *oss.Client
}

func newBucket(env *osstest.Env) *Bucket {
	cfg := oss.LoadDefaultConfig().
		WithCredentialsProvider(credentials.NewStaticCredentialsProvider(env.AccessKeyID, env.AccessKeySecret)).
		WithRegion(env.Region).
		WithEndpoint(env.URL).
		WithRetryMaxAttempts(2)
	return &Bucket{Name: env.Bucket, client: oss.NewClient(cfg)}
}

// Keys lists every object under prefix, sorted.
func (b *Bucket) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := b.client.NewListObjectsV2Paginator(&oss.ListObjectsV2Request{Bucket: oss.Ptr(b.Name), Prefix: oss.Ptr(prefix)})
	var keys []string
	for p.HasNext() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("list oss://%s/%s: %v", b.Name, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, oss.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

// Get reads an object.
func (b *Bucket) Get(t testing.TB, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := b.client.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr(b.Name), Key: oss.Ptr(key)})
	if err != nil {
		t.Fatalf("get oss://%s/%s: %v", b.Name, key, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read oss://%s/%s: %v", b.Name, key, err)
	}
	return data
}
