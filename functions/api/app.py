import json


def handler(event, context):
    """An API Gateway (REST, proxy integration) style handler."""
    params = event.get("queryStringParameters") or {}
    body = {
        "path": event.get("path"),
        "method": event.get("httpMethod"),
        "query": params,
        "function": context.function_name,
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }
