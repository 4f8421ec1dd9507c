"""The load test's handler: the event back, untouched."""


def handler(event, context):
    return event
