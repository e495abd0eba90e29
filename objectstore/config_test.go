package objectstore

import (
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func baseConfig(kv ...string) map[string]string {
	c := map[string]string{ConfigBucket: "velero", ConfigRegion: "cn-hangzhou"}
	for i := 0; i+1 < len(kv); i += 2 {
		c[kv[i]] = kv[i+1]
	}
	return c
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(baseConfig(ConfigPrefix, "p", ConfigCACert, ""))
	require.NoError(t, err)
	assert.Equal(t, "https://oss-cn-hangzhou.aliyuncs.com", c.endpoint.String())
	assert.Equal(t, oss.SignatureVersionV4, c.signatureVersion)
	assert.Equal(t, int64(6<<20), c.partSize)
	assert.Equal(t, 3, c.concurrency)
	assert.False(t, c.insecureSkipVerify)
	assert.False(t, c.usePathStyle)
	assert.Equal(t, 10*time.Second, c.connectTimeout)
	assert.Nil(t, c.signedURLEndpoint)
}

func TestParseConfigEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want string
	}{
		{"internal", baseConfig(ConfigNetwork, "internal"), "https://oss-cn-hangzhou-internal.aliyuncs.com"},
		{"accelerate", baseConfig(ConfigNetwork, "accelerate"), "https://oss-accelerate.aliyuncs.com"},
		{"public", baseConfig(ConfigNetwork, "public"), "https://oss-cn-hangzhou.aliyuncs.com"},
		{"explicit host", baseConfig(ConfigEndpoint, "oss.example.com"), "https://oss.example.com"},
		{"explicit url", baseConfig(ConfigEndpoint, "http://127.0.0.1:9000/"), "http://127.0.0.1:9000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.cfg)
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.endpoint.String())
		})
	}
}

func TestParseConfigAllKeys(t *testing.T) {
	c, err := parseConfig(baseConfig(
		ConfigEndpoint, "http://127.0.0.1:1234",
		ConfigUsePathStyle, "true",
		ConfigSignatureVersion, "V1",
		ConfigInsecureSkipTLSVerify, "true",
		ConfigServerSideEncryption, "kms",
		ConfigKMSKeyID, "key-1",
		ConfigStorageClass, "ia",
		ConfigPartSizeMiB, "16",
		ConfigUploadConcurrency, "8",
		ConfigSignedURLEndpoint, "downloads.example.com:8443",
		ConfigCredentialsFile, "/tmp/creds",
		ConfigConnectTimeout, "3s",
		ConfigReadWriteTimeout, "4s",
		ConfigRequestTimeout, "5s",
		ConfigTransferTimeout, "1h",
	))
	require.NoError(t, err)
	assert.True(t, c.usePathStyle)
	assert.True(t, c.insecureSkipVerify)
	assert.Equal(t, oss.SignatureVersionV1, c.signatureVersion)
	assert.Equal(t, "KMS", c.sse)
	assert.Equal(t, "key-1", c.kmsKeyID)
	assert.Equal(t, "IA", c.storageClass)
	assert.Equal(t, int64(16<<20), c.partSize)
	assert.Equal(t, 8, c.concurrency)
	assert.Equal(t, "http://downloads.example.com:8443", c.signedURLEndpoint.String(), "scheme follows the endpoint")
	assert.Equal(t, "/tmp/creds", c.credentialsFile)
	assert.Equal(t, 3*time.Second, c.connectTimeout)
	assert.Equal(t, time.Hour, c.transferTimeout)
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want []string
	}{
		{"unknown key", baseConfig("regoin", "x"), []string{"regoin", "valid keys are", ConfigRegion, ConfigEndpoint, ConfigCredentialsFile, "bucket", "caCert"}},
		{"missing bucket", map[string]string{ConfigRegion: "cn-hangzhou"}, []string{`"bucket" is required`}},
		{"missing region", map[string]string{ConfigBucket: "velero"}, []string{`"region" is required`}},
		{"bad region", baseConfig(ConfigRegion, "CN_Hangzhou"), []string{`"CN_Hangzhou"`, `"region"`}},
		{"network and endpoint", baseConfig(ConfigNetwork, "internal", ConfigEndpoint, "oss.example.com"), []string{"mutually exclusive"}},
		{"bad network", baseConfig(ConfigNetwork, "vpc"), []string{`"vpc"`, `"network"`, "internal", "accelerate"}},
		{"bad bool", baseConfig(ConfigUsePathStyle, "yes please"), []string{`"yes please"`, `"usePathStyle"`}},
		{"bad tls bool", baseConfig(ConfigInsecureSkipTLSVerify, "maybe"), []string{`"maybe"`, ConfigInsecureSkipTLSVerify}},
		{"bad signature", baseConfig(ConfigSignatureVersion, "v3"), []string{`"v3"`, ConfigSignatureVersion}},
		{"bad sse", baseConfig(ConfigServerSideEncryption, "DES"), []string{`"DES"`, "AES256, KMS, SM4"}},
		{"kms key without KMS", baseConfig(ConfigServerSideEncryption, "AES256", ConfigKMSKeyID, "k"), []string{ConfigKMSKeyID, "KMS"}},
		{"bad storage class", baseConfig(ConfigStorageClass, "Glacier"), []string{`"Glacier"`, "DeepColdArchive"}},
		{"part size too small", baseConfig(ConfigPartSizeMiB, "0"), []string{`"0"`, ConfigPartSizeMiB, "1 to 5120"}},
		{"part size too big", baseConfig(ConfigPartSizeMiB, "5121"), []string{`"5121"`}},
		{"part size not a number", baseConfig(ConfigPartSizeMiB, "8MiB"), []string{`"8MiB"`}},
		{"concurrency", baseConfig(ConfigUploadConcurrency, "65"), []string{`"65"`, ConfigUploadConcurrency, "1 to 64"}},
		{"endpoint with path", baseConfig(ConfigEndpoint, "https://oss.example.com/bucket"), []string{ConfigEndpoint, "path"}},
		{"endpoint scheme", baseConfig(ConfigEndpoint, "ftp://oss.example.com"), []string{ConfigEndpoint, "scheme"}},
		{"signed url endpoint", baseConfig(ConfigSignedURLEndpoint, "https://"), []string{ConfigSignedURLEndpoint}},
		{"timeout", baseConfig(ConfigRequestTimeout, "-1s"), []string{`"-1s"`, ConfigRequestTimeout}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.cfg)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestValidConfigKeysListed(t *testing.T) {
	keys := strings.Join(ValidConfigKeys(), ",")
	for _, k := range []string{ConfigBucket, ConfigPrefix, ConfigCACert, ConfigCredentialsFile, ConfigSignedURLEndpoint} {
		assert.Contains(t, keys, k)
	}
}
