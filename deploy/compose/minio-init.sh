#!/bin/sh
# minio-init of docker-compose.yml: refuses placeholder secrets, makes the bucket, and a user
# that may read, write, list and delete in that bucket and nothing else; the API and the
# worker use that user, never MinIO's root. Safe to run again: every step is idempotent
# (`mc admin policy attach` of a policy already attached succeeds since mc RELEASE.2024-10).
# Shell builtins and mc only: the mc image has little else.
set -eu

refuse() {
  echo "minio-init: $*" >&2
  exit 1
}

check_secret() {
  case $2 in
    *[Cc][Hh][Aa][Nn][Gg][Ee]-[Mm][Ee]*)
      refuse "$1 still holds the example's placeholder; set a real secret (openssl rand -hex 32)" ;;
  esac
  [ "${#2}" -ge 16 ] || refuse "$1 must be at least 16 characters"
}

check_secret MINIO_ROOT_PASSWORD "$MINIO_ROOT_PASSWORD"
check_secret MINIO_LATENTQ_PASSWORD "$MINIO_LATENTQ_PASSWORD"
[ "$MINIO_LATENTQ_PASSWORD" != "$MINIO_ROOT_PASSWORD" ] ||
  refuse "MINIO_LATENTQ_PASSWORD must differ from MINIO_ROOT_PASSWORD"
[ "$MINIO_LATENTQ_USER" != "$MINIO_ROOT_USER" ] ||
  refuse "MINIO_LATENTQ_USER must differ from MINIO_ROOT_USER"

bucket=$LATENTQ_S3_BUCKET
policy=/tmp/latentq-bucket-policy.json  # a one-shot container of its own
while IFS= read -r line; do printf '%s\n' "$line"; done > "$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
      "Resource": ["arn:aws:s3:::$bucket"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      "Resource": ["arn:aws:s3:::$bucket/*"]
    }
  ]
}
JSON

mc alias set latentq http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "latentq/$bucket"
mc admin policy create latentq latentq-bucket "$policy"
mc admin user add latentq "$MINIO_LATENTQ_USER" "$MINIO_LATENTQ_PASSWORD"
mc admin policy attach latentq latentq-bucket --user "$MINIO_LATENTQ_USER"
