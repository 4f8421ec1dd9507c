from __future__ import annotations

import re
import tempfile
import textwrap
from pathlib import Path

import pytest

from runtime_api.functions import FunctionSpec, ImageConfig
from runtime_api.template import Template, TemplateError, load_template

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
SAM_APP = FIXTURES / "sam-app" / "template.yaml"
JSON_APP = FIXTURES / "json-app" / "template.json"


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Inline code goes under the system temp dir; point that at this test's own folder."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    return system_tmp


def write(tmp_path: Path, text: str, name: str = "template.yaml") -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_function(properties: str, *, kind: str = "AWS::Serverless::Function", extra: str = "") -> str:
    """A template with one function `Fn` whose Properties are `properties`; `extra` is appended as is."""
    body = textwrap.indent(textwrap.dedent(properties).strip(), " " * 6)
    return f"Resources:\n  Fn:\n    Type: {kind}\n    Properties:\n{body}\n{extra}"


def by_id(template: Template, logical_id: str) -> FunctionSpec:
    matches = [spec for spec in template.functions if spec.logical_id == logical_id]
    assert len(matches) == 1, [spec.logical_id for spec in template.functions]
    return matches[0]


# -- a complete SAM app -----------------------------------------------------------------------------


def test_sam_app_functions_and_skipped_resources() -> None:
    template = load_template(SAM_APP)
    assert template.path == SAM_APP.absolute()
    assert [spec.logical_id for spec in template.functions] == ["HelloFunction", "WorkerFunction"]
    assert template.skipped == (
        ("ProdOnlyFunction", "Condition IsProd is false"),
        ("Table", "AWS::DynamoDB::Table is not supported"),
        ("Bucket", "AWS::S3::Bucket is not supported"),
    )


def test_globals_fill_in_what_the_function_does_not_set() -> None:
    worker = by_id(load_template(SAM_APP), "WorkerFunction")
    assert worker == FunctionSpec(
        name="WorkerFunction",
        handler="worker.main",
        runtime="python3.12",
        code_dir=(SAM_APP.parent / "worker").resolve(),
        logical_id="WorkerFunction",
        timeout=5,
        memory_size=512,
        environment={"SHARED": "from-globals", "LOG_LEVEL": "info"},
        architectures=("x86_64",),
    )


def test_function_properties_override_globals() -> None:
    hello = by_id(load_template(SAM_APP), "HelloFunction")
    assert hello.runtime == "python3.12"  # from Globals
    assert hello.handler == "app.handler"
    assert hello.code_dir == (SAM_APP.parent / "hello").resolve()
    assert hello.code_dir.is_absolute()
    assert hello.memory_size == 256  # !Ref Memory beats Globals' 512
    assert hello.timeout == 10  # !FindInMap beats Globals' 5
    assert hello.architectures == ("arm64",)  # SAM replaces Architectures rather than concatenating
    assert hello.ephemeral_storage == 1024
    assert hello.reserved_concurrency == 4
    assert hello.environment["SHARED"] == "from-globals"
    assert hello.environment["LOG_LEVEL"] == "debug"


def test_parameter_defaults_feed_ref_and_sub() -> None:
    hello = by_id(load_template(SAM_APP), "HelloFunction")
    assert hello.name == "local-hello-dev"
    assert hello.description == "Hello in dev"
    assert hello.environment["STAGE"] == "dev"
    assert hello.environment["MODE"] == "development"
    assert hello.environment["JOINED"] == "dev-b"  # !Select on a CommaDelimitedList parameter
    assert hello.environment["WITH_VARS"] == "dev@us-east-1"


def test_parameter_overrides_win_over_defaults_and_drive_conditions() -> None:
    template = load_template(SAM_APP, parameter_overrides={"Stage": "prod", "Memory": "1024"})
    hello = by_id(template, "HelloFunction")
    assert hello.name == "local-hello-prod"
    assert hello.memory_size == 1024
    assert hello.timeout == 30
    assert hello.environment["MODE"] == "production"
    assert hello.environment["ONLY_IN_PROD"] == "yes"
    assert [spec.logical_id for spec in template.functions] == [
        "HelloFunction",
        "WorkerFunction",
        "ProdOnlyFunction",
    ]
    # no state carried over from one load to the next
    assert by_id(load_template(SAM_APP), "HelloFunction").name == "local-hello-dev"


def test_override_outside_allowed_values_names_the_parameter() -> None:
    with pytest.raises(TemplateError) as caught:
        load_template(SAM_APP, parameter_overrides={"Stage": "qa"})
    message = str(caught.value)
    assert message.startswith(f"{SAM_APP}: resource HelloFunction: ")
    assert "parameter Stage: 'qa' is not one of ['dev', 'prod']" in message


def test_pseudo_parameters_follow_region_and_account() -> None:
    template = load_template(SAM_APP, region="eu-west-1", account_id="210987654321")
    hello = by_id(template, "HelloFunction")
    assert hello.environment["REGION"] == "eu-west-1"
    assert hello.environment["ACCOUNT"] == "210987654321"
    assert hello.environment["STACK"] == "local"
    assert hello.environment["PARTITION"] == "aws"
    assert hello.environment["URL_SUFFIX"] == "amazonaws.com"
    assert hello.environment["WITH_VARS"] == "dev@eu-west-1"
    assert (hello.region, hello.account_id) == ("eu-west-1", "210987654321")
    assert hello.arn == "arn:aws:lambda:eu-west-1:210987654321:function:local-hello-dev"


def test_environment_values_are_stringified_like_sam() -> None:
    env = by_id(load_template(SAM_APP), "HelloFunction").environment
    assert env["ENABLED"] == "true"
    assert env["DISABLED"] == "false"
    assert env["RETRIES"] == "3"
    assert env["RATIO"] == "0.5"
    assert env["TABLE_NAME"] == ""  # Ref to a resource: only a deployed stack knows it
    assert env["TABLE_ARN"] == ""  # likewise Fn::GetAtt
    assert env["LITERAL"] == "${NotAVariable}"
    assert "ONLY_IN_PROD" not in env  # AWS::NoValue drops the variable
    assert all(isinstance(value, str) for value in env.values())


# -- JSON, inline code, plain Lambda functions ------------------------------------------------------


def test_json_template() -> None:
    template = load_template(str(JSON_APP))
    sam = by_id(template, "JsonFunction")
    assert sam.runtime == "python3.13"
    assert sam.handler == "main.handler"
    assert sam.timeout == 7
    assert sam.code_dir == (JSON_APP.parent / "src").resolve()
    assert sam.environment == {
        "FROM_GLOBALS": "yes",
        "GREETING": "hi",
        "WHERE": "us-east-1/local",
        "ROLE": "",
    }
    plain = by_id(template, "PlainFunction")
    assert plain.handler is None  # optional for provided.* runtimes
    assert plain.runtime == "provided.al2023"
    assert plain.memory_size == 1024
    assert plain.environment == {"MODE": "plain"}  # Globals apply to AWS::Serverless::Function only
    assert template.skipped == (("Role", "AWS::IAM::Role is not supported"),)


def test_inline_code_is_written_once_under_the_temp_dir(tmp_path: Path, private_tmp: Path) -> None:
    path = write(
        tmp_path,
        one_function(
            """
            Runtime: python3.12
            Handler: index.handler
            InlineCode: |
              def handler(event, context):
                  return "inline"
            """
        ),
    )
    spec = load_template(path).functions[0]
    assert spec.code_dir.is_relative_to(private_tmp)
    source = spec.code_dir / "index.py"
    assert source.read_text() == 'def handler(event, context):\n    return "inline"\n'
    written = source.stat().st_mtime_ns
    again = load_template(path).functions[0]
    assert again.code_dir == spec.code_dir
    assert source.stat().st_mtime_ns == written


def test_lambda_function_with_zipfile_and_local_code(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Resources:
          Zipped:
            Type: AWS::Lambda::Function
            Properties:
              Runtime: python3.12
              Handler: lambda_function.lambda_handler
              FunctionName: zipped
              Timeout: 60
              Code:
                ZipFile: !Sub |
                  REGION = "${AWS::Region}"
                  def lambda_handler(event, context):
                      return REGION
          Local:
            Type: AWS::Lambda::Function
            Properties:
              Runtime: python3.11
              Handler: app.handler
              Code: src
              Architectures: [arm64]
          OnS3:
            Type: AWS::Lambda::Function
            Properties:
              Runtime: python3.12
              Handler: app.handler
              Code: {S3Bucket: my-bucket, S3Key: code.zip}
        """,
    )
    template = load_template(path, region="ap-south-1")
    zipped = by_id(template, "Zipped")
    assert (zipped.name, zipped.timeout) == ("zipped", 60)
    assert 'REGION = "ap-south-1"' in (zipped.code_dir / "lambda_function.py").read_text()
    local = by_id(template, "Local")
    assert local.code_dir == (tmp_path / "src").resolve()
    assert local.architectures == ("arm64",)
    assert template.skipped == (("OnS3", "Code is an S3 location; only local code is supported"),)


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ("CodeUri: s3://my-bucket/code.zip", "CodeUri s3://my-bucket/code.zip is on S3; only local code"),
        ("CodeUri: {Bucket: my-bucket, Key: code.zip}", "CodeUri is an S3 location; only local code"),
    ],
)
def test_functions_we_cannot_run_are_skipped(tmp_path: Path, properties: str, reason: str) -> None:
    path = write(tmp_path, one_function(f"Runtime: python3.12\nHandler: app.handler\n{properties}"))
    template = load_template(path)
    assert template.functions == ()
    [(logical_id, why)] = template.skipped
    assert logical_id == "Fn"
    assert why.startswith(reason)


def test_image_functions(tmp_path: Path) -> None:
    """PackageType Image (explicit, or implied by ImageUri) with ImageConfig; the image sam build makes
    from Metadata.Dockerfile; Runtime and Handler mean nothing for images."""
    path = write(
        tmp_path,
        """
        Resources:
          Explicit:
            Type: AWS::Serverless::Function
            Properties:
              PackageType: Image
              ImageUri: registry.example/app:1
              ImageConfig:
                EntryPoint: [/lambda-entrypoint.sh]
                Command: [app.handler, 2]
                WorkingDirectory: /srv
          Implied:
            Type: AWS::Lambda::Function
            Properties: {Code: {ImageUri: local/app:latest}, Role: arn:aws:iam::123456789012:role/r}
          Built:
            Type: AWS::Serverless::Function
            Metadata: {Dockerfile: Dockerfile, DockerContext: ., DockerTag: v3}
            Properties: {PackageType: Image}
        """,
    )
    template = load_template(path)
    explicit = by_id(template, "Explicit")
    assert (explicit.package_type, explicit.image_uri, explicit.code_dir) == ("Image", "registry.example/app:1", None)
    assert (explicit.runtime, explicit.handler) == ("", None)
    assert explicit.image_config == ImageConfig(("/lambda-entrypoint.sh",), ("app.handler", "2"), "/srv")
    implied = by_id(template, "Implied")
    assert (implied.package_type, implied.image_uri, implied.image_config) == (
        "Image",
        "local/app:latest",
        ImageConfig(),
    )
    assert by_id(template, "Built").image_uri == "built:v3"


def test_isolation_metadata(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        one_function(BASE, extra="    Metadata: {SandboxRuntime: {Isolation: docker, AllowNetwork: false}}\n"),
    )
    [function] = load_template(path).functions
    assert (function.isolation, function.allow_network, function.package_type) == ("docker", False, "Zip")
    path = write(tmp_path, one_function(BASE, extra="    Metadata: {SandboxRuntime: {Isolation: vm}}\n"))
    with pytest.raises(TemplateError, match="Isolation must be one of bwrap, docker, got 'vm'"):
        load_template(path)
    image = "PackageType: Image\nImageUri: a:1"
    path = write(tmp_path, one_function(image, extra="    Metadata: {SandboxRuntime: {Isolation: bwrap}}\n"))
    with pytest.raises(TemplateError, match="PackageType Image functions run on the docker isolation"):
        load_template(path)


def test_code_uri_defaults_to_the_template_folder(tmp_path: Path) -> None:
    path = write(tmp_path, one_function("Runtime: python3.12\nHandler: app.handler"))
    assert load_template(path).functions[0].code_dir == tmp_path.resolve()


def test_other_runtimes_are_returned_for_the_service_to_judge(tmp_path: Path) -> None:
    path = write(tmp_path, one_function("Runtime: nodejs22.x\nHandler: index.handler\nCodeUri: src"))
    assert load_template(path).functions[0].runtime == "nodejs22.x"


def test_ignore_globals_uses_sam_semantics(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Globals:
          Function:
            Runtime: python3.12
            Timeout: 30
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            IgnoreGlobals: [Timeout]
            Properties:
              Handler: app.handler
              CodeUri: src
        """,
    )
    spec = load_template(path).functions[0]
    assert (spec.runtime, spec.timeout) == ("python3.12", 3)


def test_unreferenced_parameter_without_default_is_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        one_function(
            "Runtime: python3.12\nHandler: app.handler\nCodeUri: src",
            extra="Parameters:\n  Unused:\n    Type: String\n",
        ),
    )
    assert load_template(path).functions[0].name == "Fn"


def test_parameter_without_default_can_come_from_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        one_function(
            "Runtime: python3.12\nHandler: app.handler\nCodeUri: src\nTimeout: !Ref TimeoutSeconds",
            extra="Parameters:\n  TimeoutSeconds:\n    Type: Number\n",
        ),
    )
    assert load_template(path, parameter_overrides={"TimeoutSeconds": "42"}).functions[0].timeout == 42
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    assert str(caught.value) == (
        f"{path}: resource Fn: Timeout: parameter TimeoutSeconds has no Default and no value in parameter_overrides"
    )


# -- errors -----------------------------------------------------------------------------------------

BASE = "Runtime: python3.12\nHandler: app.handler\nCodeUri: src\n"


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (BASE + "Timeout: 0", "Timeout must be between 1 and 900 seconds, got 0"),
        (BASE + "LoggingConfig: {LogFormat: XML}", "LoggingConfig.LogFormat must be one of Text, JSON, got 'XML'"),
        (
            BASE + "LoggingConfig: {LogFormat: JSON, ApplicationLogLevel: LOUD}",
            "LoggingConfig.ApplicationLogLevel must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL",
        ),
        (BASE + "Timeout: 901", "Timeout must be between 1 and 900 seconds, got 901"),
        (BASE + "Timeout: soon", "Timeout must be an integer, got 'soon'"),
        (BASE + "Timeout: 2.5", "Timeout must be an integer, got 2.5"),
        (BASE + "MemorySize: 64", "MemorySize must be between 128 and 10240 MB, got 64"),
        (BASE + "EphemeralStorage: {Size: 256}", "EphemeralStorage.Size must be between 512 and 10240 MB"),
        (BASE + "ReservedConcurrentExecutions: -1", "ReservedConcurrentExecutions must be at least 0"),
        (BASE + "Architectures: [mips]", "Architectures must be a list of one of x86_64, arm64"),
        (BASE + "Architectures: [x86_64, arm64]", "Architectures must be a list of one of x86_64, arm64"),
        (BASE + "FunctionName: has spaces", "FunctionName must be 1 to 64 letters"),
        (BASE + "FunctionName: !Ref Other", "FunctionName: Ref to resource Other cannot be resolved"),
        (BASE + "Timeout: !GetAtt Other.Timeout", "Timeout: Fn::GetAtt cannot be resolved locally"),
        (BASE + "Description: !Ref Nowhere", "Description: Ref to Nowhere, which is neither a parameter nor"),
        (BASE + "PackageType: Tarball", "PackageType must be Zip or Image, got 'Tarball'"),
        ("PackageType: Image", "PackageType Image needs ImageUri"),
        ("PackageType: Image\nImageUri: [a]", "ImageUri must be a non-empty string"),
        ("ImageUri: a:1\nImageConfig: {Command: app.handler}", "ImageConfig.Command must be a list of strings"),
        ("ImageUri: a:1\nImageConfig: {WorkingDirectory: srv}", "ImageConfig.WorkingDirectory must be an absolute"),
        (BASE + "InlineCode: x = 1", "only one of InlineCode and CodeUri can be set"),
        ("Runtime: python3.12\nCodeUri: src", "Handler is required for runtime python3.12"),
        ("Handler: app.handler\nCodeUri: src", "Runtime is required"),
        (
            "Runtime: python3.12\nHandler: app.handler\nCodeUri: missing/",
            "code path 'missing/' does not exist",
        ),
        ("Runtime: python3.12\nHandler: app.handler\nCodeUri: template.yaml", "is not a directory"),
        (
            "Runtime: python3.12\nHandler: handler\nInlineCode: x = 1",
            "Handler must look like module.function",
        ),
        ("Runtime: provided.al2\nInlineCode: echo", "inline code is only supported for python and nodejs"),
    ],
)
def test_invalid_properties_name_file_resource_and_property(tmp_path: Path, properties: str, message: str) -> None:
    path = write(tmp_path, one_function(properties, extra="  Other:\n    Type: AWS::SQS::Queue\n"))
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    assert str(caught.value).startswith(f"{path}: resource Fn: ")
    assert message in str(caught.value)


def test_logging_config_from_globals_and_function(tmp_path: Path) -> None:
    template = load_template(
        write(
            tmp_path,
            """
            Globals:
              Function:
                LoggingConfig:
                  LogFormat: JSON
            Resources:
              Quiet:
                Type: AWS::Serverless::Function
                Properties: {Runtime: python3.12, Handler: app.handler, CodeUri: src}
              Chatty:
                Type: AWS::Serverless::Function
                Properties:
                  Runtime: python3.12
                  Handler: app.handler
                  CodeUri: src
                  LoggingConfig: {ApplicationLogLevel: DEBUG}
            """,
        )
    )
    assert (by_id(template, "Quiet").log_format, by_id(template, "Quiet").application_log_level) == ("JSON", None)
    assert (by_id(template, "Chatty").log_format, by_id(template, "Chatty").application_log_level) == ("JSON", "DEBUG")


def test_a_logical_id_yaml_reads_as_a_boolean_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "Resources:\n  On:\n    Type: AWS::Serverless::Function\n    Properties: {}\n")
    with pytest.raises(TemplateError, match=r"resource True: the logical id must be a string \(quote it"):
        load_template(path)


def test_errors_name_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, one_function("Runtime: python3.12\nHandler: app.handler\nTimeout: 0"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TemplateError, match=r"^template\.yaml: resource Fn: Timeout must be between 1 and 900"):
        load_template("template.yaml")


def test_duplicate_function_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Globals:
          Function: {Runtime: python3.12, Handler: app.handler, CodeUri: src}
        Resources:
          First:
            Type: AWS::Serverless::Function
            Properties: {FunctionName: shared}
          Second:
            Type: AWS::Serverless::Function
            Properties: {FunctionName: shared}
        """,
    )
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    assert str(caught.value) == (f"{path}: resource Second: FunctionName 'shared' is already used by resource First")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(TemplateError, match=re.escape(f"{missing}: template file not found")):
        load_template(missing)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Resources:\n  Fn:\n    Type: [unclosed\n  Other: 1\n")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(path))}: cannot parse the template: line \d+: "):
        load_template(path)


def test_json_syntax_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n\t"Resources": {\n\t\t"Fn": {"Type" "AWS::SQS::Queue"}\n\t}\n}\n', name="t.json")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(path))}: cannot parse the template: line 3: "):
        load_template(path)


def test_duplicate_keys_are_a_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, "Resources:\n  Fn:\n    Type: AWS::SQS::Queue\n  Fn:\n    Type: AWS::SNS::Topic\n")
    with pytest.raises(TemplateError, match=r"cannot parse the template: Duplicate found 'Fn' \(line 2\)"):
        load_template(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "the template is not a mapping"),
        ("AWSTemplateFormatVersion: '2010-09-09'\n", "the template has no Resources"),
        (
            "Globals:\n  Function:\n    FunctionName: x\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n",
            "Globals: 'Globals' section is invalid. 'FunctionName' is not a supported property of 'Function'",
        ),
        ("Parameters: [a]\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n", "Parameters must be a mapping"),
    ],
)
def test_invalid_template_structure(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_unresolvable_condition_reference(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        one_function("Runtime: python3.12\nHandler: app.handler\nTimeout: !If [Missing, 1, 2]"),
    )
    with pytest.raises(TemplateError, match="resource Fn: Timeout: Condition 'Missing' is not defined"):
        load_template(path)


def test_conditions_and_less_common_intrinsics(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        Parameters:
          Stage: {Type: String, Default: prod}
          Secret: {Type: "AWS::SSM::Parameter::Value<String>", Default: /app/secret}
        Conditions:
          IsProd: !Equals [!Ref Stage, prod]
          IsEast: !Equals [!Ref AWS::Region, us-east-1]
          ProdInEast: !And [!Condition IsProd, !Condition IsEast]
          NotProd: !Not [!Condition IsProd]
          Either: !Or [!Condition NotProd, !Condition IsEast]
        Mappings:
          Sizes:
            prod: {Memory: 2048}
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              Runtime: python3.12
              Handler: app.handler
              CodeUri: src
              MemorySize: !FindInMap [Sizes, !Ref Stage, Memory]
              Timeout: !FindInMap [Sizes, !Ref Stage, Timeout, {DefaultValue: 15}]
              ReservedConcurrentExecutions: !If [NotProd, 1, !Ref AWS::NoValue]
              Environment:
                Variables:
                  PROD_IN_EAST: !If [ProdInEast, "yes", "no"]
                  EITHER: !If [Either, "yes", "no"]
                  SECOND: !Select [1, !Split [",", "a,b,c"]]
                  ENCODED: !Base64 hello
                  SECRET: !Ref Secret
        """,
    )
    east = load_template(path).functions[0]
    assert (east.memory_size, east.timeout, east.reserved_concurrency) == (2048, 15, None)
    assert east.environment == {
        "PROD_IN_EAST": "yes",
        "EITHER": "yes",
        "SECOND": "b",
        "ENCODED": "aGVsbG8=",
        "SECRET": "",  # SSM parameters are only known to a deployed stack
    }
    west = load_template(path, region="us-gov-west-1").functions[0]
    assert (west.environment["PROD_IN_EAST"], west.environment["EITHER"]) == ("no", "no")
    with pytest.raises(TemplateError, match="resource Fn: MemorySize: Fn::FindInMap: Mappings has no Sizes/qa"):
        load_template(path, parameter_overrides={"Stage": "qa"})


# -- layers -----------------------------------------------------------------------------------------

LAYERED = """
Parameters:
  Stage: {Type: String, Default: dev}
  ExtraLayer: {Type: String, Default: "arn:aws:lambda:us-east-1:017000801446:layer:Powertools:7"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    CodeUri: src
    Layers: [!Ref Common]
Resources:
  Common:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layers/common, LayerName: !Sub "common-${Stage}"}
  Plain:
    Type: AWS::Lambda::LayerVersion
    Properties: {Content: layers/plain}
  OnS3:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: {Bucket: b, Key: layer.zip}}
  ProdOnly:
    Type: AWS::Lambda::LayerVersion
    Condition: IsProd
    Properties: {Content: layers/plain}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Layers:
        - !Ref Plain
        - !If [IsProd, !Ref ProdOnly, !Ref AWS::NoValue]
        - arn:aws:lambda:us-east-1:123456789012:layer:common-dev:3
        - !GetAtt LayerApp.Outputs.LayerArn
  Bare:
    Type: AWS::Serverless::Function
    IgnoreGlobals: [Layers]
  Cfn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      Code: src
      Layers: [!Ref OnS3, !Ref Plain, !Ref ExtraLayer]
"""


S3_LAYER = "ContentUri is an S3 location; only local layer content is supported"


def layered_template(tmp_path: Path) -> Path:
    for name in ("common", "plain"):
        (tmp_path / "layers" / name / "python").mkdir(parents=True)
    return write(tmp_path, LAYERED)


def test_layers_in_order_with_globals_refs_and_arns(tmp_path: Path) -> None:
    template = load_template(layered_template(tmp_path))
    common, plain = (tmp_path / "layers" / "common").resolve(), (tmp_path / "layers" / "plain").resolve()
    # Globals' layers come first (SAM concatenates lists); an ARN naming a layer of the template (its
    # LayerName, in our account) is that layer.
    assert by_id(template, "Fn").layers == (common, plain, common)
    assert by_id(template, "Bare").layers == ()
    assert by_id(template, "Cfn").layers == (plain,)  # Globals apply to AWS::Serverless::Function only
    assert [(layer.logical_id, layer.name, layer.content_dir) for layer in template.layers] == [
        ("Common", "common-dev", common),
        ("Plain", "Plain", plain),
    ]
    assert template.skipped == (
        ("OnS3", S3_LAYER),
        ("ProdOnly", "Condition IsProd is false"),
    )
    assert template.skipped_layers == (
        ("Fn", "Fn::GetAtt LayerApp.Outputs.LayerArn", "it cannot be resolved locally"),
        ("Cfn", "OnS3", f"layer OnS3 is not loaded: {S3_LAYER}"),
        ("Cfn", "arn:aws:lambda:us-east-1:017000801446:layer:Powertools:7", "it is not a layer of this template"),
    )


def test_a_condition_can_bring_a_layer_in(tmp_path: Path) -> None:
    template = load_template(layered_template(tmp_path), parameter_overrides={"Stage": "prod"})
    plain = (tmp_path / "layers" / "plain").resolve()
    # The ARN names common-dev, but the layer is now common-prod: left out.
    assert by_id(template, "Fn").layers == ((tmp_path / "layers" / "common").resolve(), plain, plain)
    assert ("Fn", "arn:aws:lambda:us-east-1:123456789012:layer:common-dev:3", "it is not a layer of this template") in (
        template.skipped_layers
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            one_function(BASE + "Layers: !Ref Other", extra="  Other:\n    Type: AWS::SQS::Queue\n"),
            "resource Fn: Layers must be a list",
        ),
        (
            one_function(BASE + "Layers: [!Ref Other]", extra="  Other:\n    Type: AWS::SQS::Queue\n"),
            "resource Fn: Layers: Ref Other is a AWS::SQS::Queue, not a layer version",
        ),
        (one_function(BASE + "Layers: [just-a-name]"), "resource Fn: Layers: expected a layer version ARN"),
        (one_function(BASE + "Layers: [!Ref Nowhere]"), "resource Fn: Layers: Ref to Nowhere, which is neither"),
        (
            one_function(BASE + "Layers: [" + ", ".join(["arn:aws:lambda:us-east-1:123456789012:layer:x:1"] * 6) + "]"),
            "resource Fn: Layers: a function can use at most 5 layers, got 6",
        ),
        (
            one_function(
                "PackageType: Image\nImageUri: app:1\nLayers: [arn:aws:lambda:us-east-1:123456789012:layer:x:1]"
            ),
            "resource Fn: Layers are not supported for PackageType Image functions",
        ),
        (
            one_function(BASE, extra="  L:\n    Type: AWS::Serverless::LayerVersion\n    Properties: {}\n"),
            "resource L: ContentUri is required",
        ),
        (
            one_function(
                BASE, extra="  L:\n    Type: AWS::Lambda::LayerVersion\n    Properties: {Content: missing/}\n"
            ),
            "resource L: layer path 'missing/' does not exist",
        ),
        (
            one_function(
                BASE, extra="  L:\n    Type: AWS::Lambda::LayerVersion\n    Properties: {Content: template.yaml}\n"
            ),
            "resource L: layer path 'template.yaml' is not a directory",
        ),
    ],
)
def test_invalid_layers(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)


def test_sam_init_hello_world_template() -> None:
    """The Python "Hello World Example" in the shape `sam init` makes it (tests/fixtures/sam-hello-world)."""
    path = Path(__file__).parent / "fixtures" / "sam-hello-world" / "template.yaml"
    template = load_template(path)
    [hello] = template.functions
    assert (hello.name, hello.handler, hello.runtime) == ("HelloWorldFunction", "app.lambda_handler", "python3.12")
    assert hello.code_dir == (path.parent / "hello_world").resolve()
    assert (hello.timeout, hello.memory_size, hello.architectures, hello.log_format) == (3, 128, ("x86_64",), "JSON")
    assert hello.layers == ()
    assert template.skipped == (
        ("ApplicationResourceGroup", "AWS::ResourceGroups::Group is not supported"),
        ("ApplicationInsightsMonitoring", "AWS::ApplicationInsights::Application is not supported"),
    )
