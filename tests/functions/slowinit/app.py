"""A module whose import takes 3 seconds: longer than a 1-second init limit."""

import time

time.sleep(3)
INITIALISED_AT = time.time()


def handler(event, context):
    return {"initialised_at": INITIALISED_AT}
