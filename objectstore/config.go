package objectstore

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
)

// Keys Velero itself adds to every object store config.
const (
	ConfigBucket          = "bucket"
	ConfigPrefix          = "prefix"
	ConfigCACert          = "caCert"
	ConfigCredentialsFile = "credentialsFile"
)

// Keys of the BackupStorageLocation spec.config understood by this plugin.
const (
	ConfigRegion                = "region"
	ConfigEndpoint              = "endpoint"
	ConfigNetwork               = "network"
	ConfigUsePathStyle          = "usePathStyle"
	ConfigSignatureVersion      = "signatureVersion"
	ConfigInsecureSkipTLSVerify = "insecureSkipTLSVerify"
	ConfigServerSideEncryption  = "serverSideEncryption"
	ConfigKMSKeyID              = "kmsKeyId"
	ConfigStorageClass          = "storageClass"
	ConfigPartSizeMiB           = "partSizeMiB"
	ConfigUploadConcurrency     = "uploadConcurrency"
	ConfigSignedURLEndpoint     = "signedUrlEndpoint"
	ConfigConnectTimeout        = "connectTimeout"
	ConfigReadWriteTimeout      = "readWriteTimeout"
	ConfigRequestTimeout        = "requestTimeout"
	ConfigTransferTimeout       = "transferTimeout"
)

// validConfigKeys is every key Init accepts besides bucket, prefix and caCert,
// which framework.ValidateObjectStoreConfigKeys always allows.
var validConfigKeys = []string{
	ConfigCredentialsFile,
	ConfigRegion,
	ConfigEndpoint,
	ConfigNetwork,
	ConfigUsePathStyle,
	ConfigSignatureVersion,
	ConfigInsecureSkipTLSVerify,
	ConfigServerSideEncryption,
	ConfigKMSKeyID,
	ConfigStorageClass,
	ConfigPartSizeMiB,
	ConfigUploadConcurrency,
	ConfigSignedURLEndpoint,
	ConfigConnectTimeout,
	ConfigReadWriteTimeout,
	ConfigRequestTimeout,
	ConfigTransferTimeout,
}

const (
	networkPublic     = "public"
	networkInternal   = "internal"
	networkAccelerate = "accelerate"

	defaultPartSizeMiB = 6
	minPartSizeMiB     = 1 // OSS needs >= 100 KiB for every part but the last
	maxPartSizeMiB     = 5120
	// 6 MiB x 3 are the v2 SDK uploader's own defaults, and keep the plugin
	// under 100 MiB RSS while streaming (see README: make bench).
	defaultUploadConcurrency = 3
	maxUploadConcurrency     = 64

	defaultConnectTimeout   = 10 * time.Second
	defaultReadWriteTimeout = 60 * time.Second
	defaultRequestTimeout   = 2 * time.Minute
	// Velero's default item operation timeout; a backup tarball or snapshot
	// larger than this at the available bandwidth needs transferTimeout raised.
	defaultTransferTimeout = 4 * time.Hour
)

var (
	validSSE           = []string{"AES256", "KMS", "SM4"}
	validStorageClass  = []string{"Standard", "IA", "Archive", "ColdArchive", "DeepColdArchive"}
	validSignatureVers = []string{"v4", "v1"}
	validNetworks      = []string{networkPublic, networkInternal, networkAccelerate}
)

// storeConfig is the parsed and validated form of the Init config.
type storeConfig struct {
	bucket             string
	region             string
	endpoint           *url.URL
	usePathStyle       bool
	signatureVersion   oss.SignatureVersionType
	insecureSkipVerify bool
	caCert             []byte
	sse                string
	kmsKeyID           string
	storageClass       string
	partSize           int64
	concurrency        int
	signedURLEndpoint  *url.URL
	credentialsFile    string

	connectTimeout   time.Duration
	readWriteTimeout time.Duration
	requestTimeout   time.Duration
	transferTimeout  time.Duration
}

func invalidValue(key, value, want string) error {
	return fmt.Errorf("invalid value %q for config key %q: %s", value, key, want)
}

func parseConfig(config map[string]string) (*storeConfig, error) {
	if err := framework.ValidateObjectStoreConfigKeys(config, validConfigKeys...); err != nil {
		return nil, err
	}

	c := &storeConfig{
		bucket:           strings.TrimSpace(config[ConfigBucket]),
		region:           strings.TrimSpace(config[ConfigRegion]),
		caCert:           []byte(config[ConfigCACert]),
		credentialsFile:  config[ConfigCredentialsFile],
		signatureVersion: oss.SignatureVersionV4,
		partSize:         defaultPartSizeMiB << 20,
		concurrency:      defaultUploadConcurrency,
		connectTimeout:   defaultConnectTimeout,
		readWriteTimeout: defaultReadWriteTimeout,
		requestTimeout:   defaultRequestTimeout,
		transferTimeout:  defaultTransferTimeout,
	}
	if c.bucket == "" {
		return nil, fmt.Errorf("config key %q is required: the OSS bucket name (spec.objectStorage.bucket)", ConfigBucket)
	}
	if c.region == "" {
		return nil, fmt.Errorf("config key %q is required, e.g. cn-hangzhou", ConfigRegion)
	}
	if !isRegionName(c.region) {
		return nil, invalidValue(ConfigRegion, c.region, "must contain only lower-case letters, digits and '-', e.g. cn-hangzhou")
	}

	var err error
	if c.endpoint, err = resolveEndpoint(c.region, config[ConfigEndpoint], config[ConfigNetwork]); err != nil {
		return nil, err
	}
	if v, ok := config[ConfigSignedURLEndpoint]; ok && v != "" {
		if c.signedURLEndpoint, err = parseEndpointURL(ConfigSignedURLEndpoint, v, c.endpoint.Scheme); err != nil {
			return nil, err
		}
	}

	if c.usePathStyle, err = parseBool(config, ConfigUsePathStyle, false); err != nil {
		return nil, err
	}
	if c.insecureSkipVerify, err = parseBool(config, ConfigInsecureSkipTLSVerify, false); err != nil {
		return nil, err
	}

	switch v := strings.ToLower(strings.TrimSpace(config[ConfigSignatureVersion])); v {
	case "", "v4":
		c.signatureVersion = oss.SignatureVersionV4
	case "v1":
		c.signatureVersion = oss.SignatureVersionV1
	default:
		return nil, invalidValue(ConfigSignatureVersion, config[ConfigSignatureVersion], "must be one of "+strings.Join(validSignatureVers, ", "))
	}

	if v := strings.TrimSpace(config[ConfigServerSideEncryption]); v != "" {
		if c.sse, err = oneOf(ConfigServerSideEncryption, v, validSSE); err != nil {
			return nil, err
		}
	}
	c.kmsKeyID = strings.TrimSpace(config[ConfigKMSKeyID])
	if c.kmsKeyID != "" && c.sse != "KMS" {
		return nil, fmt.Errorf("config key %q is only valid with %s=KMS", ConfigKMSKeyID, ConfigServerSideEncryption)
	}
	if v := strings.TrimSpace(config[ConfigStorageClass]); v != "" {
		if c.storageClass, err = oneOf(ConfigStorageClass, v, validStorageClass); err != nil {
			return nil, err
		}
	}

	partMiB, err := parseInt(config, ConfigPartSizeMiB, defaultPartSizeMiB, minPartSizeMiB, maxPartSizeMiB)
	if err != nil {
		return nil, err
	}
	c.partSize = int64(partMiB) << 20
	if c.concurrency, err = parseInt(config, ConfigUploadConcurrency, defaultUploadConcurrency, 1, maxUploadConcurrency); err != nil {
		return nil, err
	}

	for _, d := range []struct {
		key string
		dst *time.Duration
	}{
		{ConfigConnectTimeout, &c.connectTimeout},
		{ConfigReadWriteTimeout, &c.readWriteTimeout},
		{ConfigRequestTimeout, &c.requestTimeout},
		{ConfigTransferTimeout, &c.transferTimeout},
	} {
		if err := parseDuration(config, d.key, d.dst); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func isRegionName(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
			return false
		}
	}
	return s != ""
}

// resolveEndpoint applies the endpoint/network/region rules: an explicit
// endpoint wins, network picks one of the Alibaba Cloud host names, and
// setting both is a mistake we refuse rather than silently pick one.
func resolveEndpoint(region, endpoint, network string) (*url.URL, error) {
	endpoint = strings.TrimSpace(endpoint)
	network = strings.TrimSpace(network)
	if network != "" {
		if _, err := oneOf(ConfigNetwork, network, validNetworks); err != nil {
			return nil, err
		}
		if endpoint != "" {
			return nil, fmt.Errorf("config keys %q and %q are mutually exclusive: %q already selects the endpoint", ConfigEndpoint, ConfigNetwork, ConfigNetwork)
		}
	}
	if endpoint == "" {
		switch network {
		case networkInternal:
			endpoint = fmt.Sprintf("https://oss-%s-internal.aliyuncs.com", region)
		case networkAccelerate:
			endpoint = "https://oss-accelerate.aliyuncs.com"
		default:
			endpoint = fmt.Sprintf("https://oss-%s.aliyuncs.com", region)
		}
	}
	return parseEndpointURL(ConfigEndpoint, endpoint, "https")
}

// parseEndpointURL accepts "host[:port]" or "scheme://host[:port]" with no path.
func parseEndpointURL(key, value, defaultScheme string) (*url.URL, error) {
	raw := strings.TrimSpace(value)
	if !strings.Contains(raw, "://") {
		raw = defaultScheme + "://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, invalidValue(key, value, "must be a host name or URL such as https://oss-cn-hangzhou.aliyuncs.com")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, invalidValue(key, value, "scheme must be http or https")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, invalidValue(key, value, "must not contain a path, query or user info")
	}
	u.Path = ""
	return u, nil
}

func oneOf(key, value string, valid []string) (string, error) {
	for _, v := range valid {
		if strings.EqualFold(v, value) {
			return v, nil
		}
	}
	return "", invalidValue(key, value, "must be one of "+strings.Join(valid, ", "))
}

func parseBool(config map[string]string, key string, def bool) (bool, error) {
	v, ok := config[key]
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, invalidValue(key, v, "must be true or false")
	}
	return b, nil
}

func parseInt(config map[string]string, key string, def, lo, hi int) (int, error) {
	v, ok := config[key]
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < lo || n > hi {
		return 0, invalidValue(key, v, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
	}
	return n, nil
}

func parseDuration(config map[string]string, key string, dst *time.Duration) error {
	v, ok := config[key]
	if !ok || strings.TrimSpace(v) == "" {
		return nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		return invalidValue(key, v, "must be a positive Go duration such as 30s or 5m")
	}
	*dst = d
	return nil
}

// ValidConfigKeys returns every config key Init accepts, sorted.
func ValidConfigKeys() []string {
	keys := append([]string{ConfigBucket, ConfigPrefix, ConfigCACert}, validConfigKeys...)
	sort.Strings(keys)
	return keys
}
