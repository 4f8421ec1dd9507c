"""aws-lambda-powertools, used the way its documentation shows (vendored next to this file by the test)."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser

logger = Logger(service="orders")
app = APIGatewayRestResolver()


@app.get("/orders/<order_id>")
def get_order(order_id: str):
    logger.info("fetching order", extra={"order_id": order_id})
    return {"order_id": order_id}


@logger.inject_lambda_context(log_event=True)
def api(event, context):
    return app.resolve(event, context)


class Order(BaseModel):
    id: int
    items: list[str]


@event_parser(model=Order)
def parsed(event: Order, context):
    return {"id": event.id, "count": len(event.items)}
