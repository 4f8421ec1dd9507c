def handler(event, context):
    return "the template names another function"
