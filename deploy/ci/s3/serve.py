"""moto's S3 server on :9000 with a snapshot: on SIGTERM (docker stop) every bucket and object is written under
/data, and read back on the next start. A stand-in for a test, not a store: an object written between two snapshots
is lost if the container is killed."""

import json
import shutil
import signal
import sys
import threading
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

DATA = Path("/data/snapshot")
server = ThreadedMotoServer(ip_address="0.0.0.0", port=9000, verbose=False)
server.start()
client = boto3.client(
    "s3",
    endpoint_url="http://127.0.0.1:9000",
    aws_access_key_id="x",
    aws_secret_access_key="x",
    region_name="us-east-1",
)


def restore() -> None:
    manifest = DATA / "manifest.json"
    if not manifest.exists():
        return
    for bucket, keys in json.loads(manifest.read_text()).items():
        client.create_bucket(Bucket=bucket)
        for i, key in enumerate(keys):
            client.upload_file(str(DATA / bucket / str(i)), bucket, key)
    print(f"restored {sum(len(k) for k in json.loads(manifest.read_text()).values())} objects", flush=True)


def snapshot(*_: object) -> None:
    staging = DATA.with_name("snapshot.new")
    staging.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for bucket in (b["Name"] for b in client.list_buckets()["Buckets"]):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        (staging / bucket).mkdir(exist_ok=True)
        for i, key in enumerate(keys):
            client.download_file(bucket, key, str(staging / bucket / str(i)))
        manifest[bucket] = keys
    (staging / "manifest.json").write_text(json.dumps(manifest))
    if DATA.exists():
        DATA.rename(DATA.with_name("snapshot.old"))
    staging.rename(DATA)
    shutil.rmtree(DATA.with_name("snapshot.old"), ignore_errors=True)
    print(f"snapshot of {sum(len(k) for k in manifest.values())} objects", flush=True)
    server.stop()
    sys.exit(0)


restore()
signal.signal(signal.SIGTERM, snapshot)
signal.signal(signal.SIGINT, snapshot)
print("S3 stand-in on :9000", flush=True)
threading.Event().wait()
