"""aws-lambda-powertools from a layer, used the way its documentation shows: nothing of it is vendored here."""

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="greeter")
metrics = Metrics(namespace="SandboxRuntimeTests", service="greeter")
app = APIGatewayRestResolver()


@app.get("/hello")
def hello():
    name = app.current_event.get_query_string_value(name="name", default_value="world")
    logger.info("saying hello", extra={"greeted": name})
    metrics.add_metric(name="Greetings", unit=MetricUnit.Count, value=1)
    return {"message": f"hello {name}"}


@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return app.resolve(event, context)
