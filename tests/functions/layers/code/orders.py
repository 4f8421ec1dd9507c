"""boto3 (the runtime's own, from /var/runtime) against the DynamoDB endpoint the template names."""

import os

import boto3

table = boto3.resource("dynamodb", endpoint_url=os.environ["DYNAMODB_ENDPOINT"]).Table(os.environ["TABLE_NAME"])


def handler(event, context):
    table.put_item(Item={"id": event["id"], "status": event["status"], "request_id": context.aws_request_id})
    item = table.get_item(Key={"id": event["id"]}, ConsistentRead=True)["Item"]
    return {"item": item, "boto3": boto3.__file__}
