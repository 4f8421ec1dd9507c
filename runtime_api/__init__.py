"""sandbox-runtime: the AWS Lambda Invoke and Runtime APIs over sandboxed execution environments."""

__version__ = "0.1.0"
