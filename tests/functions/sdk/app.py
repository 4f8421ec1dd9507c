"""As on Lambda, the AWS SDK is importable without vendoring it, and clients are made at import time."""

import boto3

s3 = boto3.client("s3", region_name="us-east-1")


def handler(event, context):
    return {"boto3": boto3.__version__, "file": boto3.__file__, "service": s3.meta.service_model.service_name}
