import time


def handler(event, context):
    print(f"sleeping; {context.get_remaining_time_in_millis()} ms left")
    time.sleep(event.get("seconds", 5))
    return "woke up"
