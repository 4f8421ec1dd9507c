"""Functions the durability tests (tests/reliability) drive. Each logs one `RECORD {...}` line, which the
tests read back from the service log (sandboxes cannot write to the host)."""

import json
import time


def record(event, context):
    """Sleep `seconds` (default 0), then log the request id and the event (without its `padding`, which
    only makes it big); return the event."""
    time.sleep(event.get("seconds", 0))
    logged = {key: value for key, value in event.items() if key != "padding"}
    print("RECORD " + json.dumps({"request_id": context.aws_request_id, "event": logged}), flush=True)
    return event


def fail(event, context):
    """Log like `record`, then fail."""
    print("RECORD " + json.dumps({"request_id": context.aws_request_id, "event": event}), flush=True)
    raise ValueError("failing on purpose")
