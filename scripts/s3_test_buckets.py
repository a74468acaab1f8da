"""Waits for the S3 server at $AWS_ENDPOINT_URL and creates the test buckets:
`sealtrail-test` with Object Lock enabled, `sealtrail-unlocked` without, and
`sealtrail-default-retention` with a default retention of GOVERNANCE, 1 day."""
import os
import sys
import time

import boto3
import botocore

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
deadline = time.time() + 60
while True:
    try:
        s3.list_buckets()
        break
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError):
        if time.time() > deadline:
            sys.exit("the S3 test server did not start within 60 s; see target/moto.log")
        time.sleep(0.2)
s3.create_bucket(Bucket="sealtrail-test", ObjectLockEnabledForBucket=True)
s3.create_bucket(Bucket="sealtrail-unlocked")
s3.create_bucket(Bucket="sealtrail-default-retention", ObjectLockEnabledForBucket=True)
s3.put_object_lock_configuration(
    Bucket="sealtrail-default-retention",
    ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
    },
)
print("S3 test server ready at", os.environ["AWS_ENDPOINT_URL"])
