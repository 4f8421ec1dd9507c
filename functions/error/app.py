class OrderNotFound(Exception):
    pass


def handler(event, context):
    print("looking up order", event.get("order_id"))
    raise OrderNotFound(f"order {event.get('order_id')} does not exist")
