package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/sirupsen/logrus"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
)

// PluginName is the provider name of a BackupStorageLocation using this plugin.
const PluginName = "velero-etcd.io/oss"

// ObjectStore implements velero.ObjectStore on Alibaba Cloud OSS.
type ObjectStore struct {
	log     logrus.FieldLogger
	cfg     *storeConfig
	client  *oss.Client
	signer  *oss.Client // presigns URLs for signedUrlEndpoint; same as client otherwise
	secrets *secretRedactor
	getenv  func(string) string
}

var _ velero.ObjectStore = (*ObjectStore)(nil)

// New returns an ObjectStore that needs Init or InitWithCredentials.
func New(log logrus.FieldLogger) *ObjectStore {
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	return &ObjectStore{log: log, secrets: newSecretRedactor(), getenv: os.Getenv}
}

// Init configures the store from a BackupStorageLocation config.
func (o *ObjectStore) Init(config map[string]string) error {
	return o.init(config, nil)
}

// InitWithCredentials is Init for in-process use: credentials is the content
// of a credentials file (dotenv or INI form), typically a BSL's credential
// Secret, so config must not also name a credentialsFile.
func (o *ObjectStore) InitWithCredentials(config map[string]string, credentials []byte) error {
	if config[ConfigCredentialsFile] != "" {
		return fmt.Errorf("config key %q must not be set when credentials are passed to InitWithCredentials", ConfigCredentialsFile)
	}
	if credentials == nil {
		credentials = []byte{}
	}
	return o.init(config, credentials)
}

func (o *ObjectStore) init(config map[string]string, credentials []byte) error {
	cfg, err := parseConfig(config)
	if err != nil {
		return err
	}
	src, err := resolveCredentials(credentials, cfg.credentialsFile, o.getenv, o.log)
	if err != nil {
		return err
	}
	if _, ok := src.provider.(*refreshingProvider); !ok {
		// Local sources: learn the values now so errors can never echo them.
		if c, err := src.provider.GetCredentials(context.Background()); err == nil {
			o.secrets.remember(c)
		}
	}
	creds := redactingProvider{inner: src.provider, secrets: o.secrets}

	httpClient, err := newHTTPClient(cfg)
	if err != nil {
		return err
	}
	o.cfg = cfg
	o.client = newOSSClient(cfg, cfg.endpoint, httpClient, creds)
	o.signer = o.client
	if cfg.signedURLEndpoint != nil {
		o.signer = newOSSClient(cfg, cfg.signedURLEndpoint, httpClient, creds)
	}
	o.log.WithFields(logrus.Fields{
		"bucket":           cfg.bucket,
		"region":           cfg.region,
		"endpoint":         endpointForLog(cfg.endpoint),
		"signatureVersion": signatureName(cfg.signatureVersion),
		"credentials":      src.name,
		"partSizeMiB":      cfg.partSize >> 20,
		"concurrency":      cfg.concurrency,
	}).Info("Initialized OSS object store")
	return nil
}

func signatureName(v oss.SignatureVersionType) string {
	if v == oss.SignatureVersionV1 {
		return "v1"
	}
	return "v4"
}

var errNotInitialized = errors.New("object store is not initialized: call Init first")

func (o *ObjectStore) ready(op, bucket, key string) error {
	if o.client == nil {
		return &Error{Op: op, Bucket: bucket, Key: key, Err: errNotInitialized}
	}
	return nil
}

func (o *ObjectStore) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), o.cfg.requestTimeout)
}

// PutObject uploads body, a stream of unknown length, under transferTimeout.
func (o *ObjectStore) PutObject(bucket, key string, body io.Reader) error {
	if err := o.ready("PutObject", bucket, key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.transferTimeout)
	defer cancel()
	return o.PutObjectContext(ctx, bucket, key, body)
}

// PutObjectContext uploads body with bounded memory: a single PutObject when
// it fits in one part, else a parallel multipart upload. Any failure,
// including an error from body, aborts the upload: nothing appears at key.
// Without a deadline on ctx, transferTimeout applies.
func (o *ObjectStore) PutObjectContext(ctx context.Context, bucket, key string, body io.Reader) error {
	if err := o.ready("PutObject", bucket, key); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.cfg.transferTimeout)
		defer cancel()
	}
	start := time.Now()
	if err := o.upload(ctx, bucket, key, body); err != nil {
		return o.wrapErr("PutObject", bucket, key, err)
	}
	o.log.WithFields(logrus.Fields{"bucket": bucket, "key": key, "duration": time.Since(start).Round(time.Millisecond).String()}).Debug("Uploaded OSS object")
	return nil
}

// ObjectExists is (false, nil) only for a 404; any other failure is an error.
func (o *ObjectStore) ObjectExists(bucket, key string) (bool, error) {
	if err := o.ready("ObjectExists", bucket, key); err != nil {
		return false, err
	}
	ctx, cancel := o.requestContext()
	defer cancel()
	_, err := o.client.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: oss.Ptr(bucket), Key: oss.Ptr(key)})
	switch {
	case err == nil:
		return true, nil
	case IsNotFound(err):
		return false, nil
	default:
		return false, o.wrapErr("ObjectExists", bucket, key, err)
	}
}

// GetObject returns the object body as a stream; the caller must Close it.
// Reading fails if the content does not match the CRC64 OSS stored.
func (o *ObjectStore) GetObject(bucket, key string) (io.ReadCloser, error) {
	if err := o.ready("GetObject", bucket, key); err != nil {
		return nil, err
	}
	// The body outlives this call, so the deadline is the transfer timeout;
	// the connection's idle read deadline catches a stalled stream sooner.
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.transferTimeout)
	res, err := o.client.GetObject(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr(bucket), Key: oss.Ptr(key)})
	if err != nil {
		cancel()
		return nil, o.wrapErr("GetObject", bucket, key, err)
	}
	want, err := strconv.ParseUint(oss.ToString(res.HashCRC64), 10, 64)
	return newObjectReader(res.Body, cancel, err == nil, want, func(err error) error {
		return o.wrapErr("GetObject", bucket, key, err)
	}), nil
}

// ListCommonPrefixes returns the full prefixes, with the trailing delimiter,
// of the "directories" directly under prefix.
func (o *ObjectStore) ListCommonPrefixes(bucket, prefix, delimiter string) ([]string, error) {
	if err := o.ready("ListCommonPrefixes", bucket, ""); err != nil {
		return nil, err
	}
	var out []string
	err := o.list(bucket, prefix, delimiter, func(page *oss.ListObjectsV2Result) {
		for _, p := range page.CommonPrefixes {
			out = append(out, oss.ToString(p.Prefix))
		}
	})
	if err != nil {
		return nil, o.wrapListErr("ListCommonPrefixes", bucket, prefix, err)
	}
	return out, nil
}

// ListObjects returns every key that starts with prefix.
func (o *ObjectStore) ListObjects(bucket, prefix string) ([]string, error) {
	if err := o.ready("ListObjects", bucket, ""); err != nil {
		return nil, err
	}
	var out []string
	err := o.list(bucket, prefix, "", func(page *oss.ListObjectsV2Result) {
		for _, obj := range page.Contents {
			out = append(out, oss.ToString(obj.Key))
		}
	})
	if err != nil {
		return nil, o.wrapListErr("ListObjects", bucket, prefix, err)
	}
	return out, nil
}

// list pages through ListObjectsV2, 1,000 keys a page, each page with its own deadline.
func (o *ObjectStore) list(bucket, prefix, delimiter string, each func(*oss.ListObjectsV2Result)) error {
	req := &oss.ListObjectsV2Request{Bucket: oss.Ptr(bucket), MaxKeys: 1000}
	if prefix != "" {
		req.Prefix = oss.Ptr(prefix)
	}
	if delimiter != "" {
		req.Delimiter = oss.Ptr(delimiter)
	}
	pager := o.client.NewListObjectsV2Paginator(req)
	for pager.HasNext() {
		ctx, cancel := o.requestContext()
		page, err := pager.NextPage(ctx)
		cancel()
		if err != nil {
			return err
		}
		each(page)
	}
	return nil
}

// DeleteObject removes key; a missing key is not an error.
func (o *ObjectStore) DeleteObject(bucket, key string) error {
	if err := o.ready("DeleteObject", bucket, key); err != nil {
		return err
	}
	ctx, cancel := o.requestContext()
	defer cancel()
	_, err := o.client.DeleteObject(ctx, &oss.DeleteObjectRequest{Bucket: oss.Ptr(bucket), Key: oss.Ptr(key)})
	if err != nil && !IsNotFound(err) {
		return o.wrapErr("DeleteObject", bucket, key, err)
	}
	return nil
}

// CreateSignedURL presigns a GET valid for ttl, on signedUrlEndpoint when set.
func (o *ObjectStore) CreateSignedURL(bucket, key string, ttl time.Duration) (string, error) {
	if err := o.ready("CreateSignedURL", bucket, key); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", o.wrapErr("CreateSignedURL", bucket, key, fmt.Errorf("ttl must be positive, got %s", ttl))
	}
	// Presigning is local, but RRSA/ECS credentials may need a network fetch.
	ctx, cancel := o.requestContext()
	defer cancel()
	res, err := o.signer.Presign(ctx, &oss.GetObjectRequest{Bucket: oss.Ptr(bucket), Key: oss.Ptr(key)}, oss.PresignExpires(ttl))
	if err != nil {
		return "", o.wrapErr("CreateSignedURL", bucket, key, err)
	}
	return res.URL, nil
}
