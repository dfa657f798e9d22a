"""minio-init's stand-in: create the bucket (idempotent) on the S3 stand-in once it answers."""

import os
import sys
import time

import boto3

client = boto3.client(
    "s3",
    endpoint_url=os.environ.get("S3_ENDPOINT", "http://minio:9000"),
    aws_access_key_id=os.environ.get("MINIO_ROOT_USER", "x"),
    aws_secret_access_key=os.environ.get("MINIO_ROOT_PASSWORD", "x"),
    region_name="us-east-1",
)
deadline = time.monotonic() + 60
while True:
    try:
        names = {b["Name"] for b in client.list_buckets()["Buckets"]}
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
for bucket in sys.argv[1:]:
    if bucket not in names:
        client.create_bucket(Bucket=bucket)
    print(f"bucket {bucket} ready")
