// Package objectstore is the Velero ObjectStore plugin for Alibaba Cloud OSS
// (velero-etcd.io/oss). It knows nothing about etcd.
//
// BackupStorageLocation spec.config keys (Velero adds bucket, prefix, caCert
// and credentialsFile itself):
//
//	region                 required, e.g. cn-hangzhou
//	endpoint               default https://oss-<region>.aliyuncs.com; host or URL
//	network                internal | accelerate | public; not together with endpoint
//	usePathStyle           false; true for endpoints without per-bucket host names
//	signatureVersion       v4 (default) | v1
//	insecureSkipTLSVerify  false
//	serverSideEncryption   AES256 | KMS | SM4
//	kmsKeyId               only with serverSideEncryption=KMS
//	storageClass           Standard | IA | Archive | ColdArchive | DeepColdArchive
//	partSizeMiB            6 (1..5120); objects above 10,000 parts need a larger one
//	uploadConcurrency      3 (1..64); an upload holds at most (concurrency+1) parts in memory
//	signedUrlEndpoint      host or URL put into download links instead of endpoint
//	connectTimeout         10s: TCP connect and TLS handshake
//	readWriteTimeout       60s: a connection idle this long is broken
//	requestTimeout         2m: every non-streaming request, retries included
//	transferTimeout        4h: a whole PutObject, or reading a GetObject stream
//
// Credentials, first found wins: the credentials file (credentialsFile, or its
// content through InitWithCredentials; dotenv ALIBABA_CLOUD_ACCESS_KEY_ID=... or
// INI [default] access_key_id=...), the ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET/
// _SECURITY_TOKEN environment, RRSA (ALIBABA_CLOUD_ROLE_ARN,
// ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE), the ECS RAM
// role. A credentials file is re-read when it changes (checked every 10 s).
package objectstore
