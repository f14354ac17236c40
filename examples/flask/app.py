"""flask-example: the Flask example application of twelve."""

import os
import socket

import flask

app = flask.Flask(__name__)
# FLASK_* variables (options, secret key, base URL, ...) land in app.config.
app.config.from_prefixed_env()


@app.route("/")
def index():
    greeting = os.environ.get("FLASK_GREETING", "hello")
    return flask.Response(f"{greeting} from flask-example\n", mimetype="text/plain")


@app.route("/env")
def env():
    """The whole process environment, so tests can see what the app sees."""
    return flask.jsonify(dict(os.environ))


@app.route("/request")
def request_info():
    """How this request reached the app: client address, scheme, host, forwarded headers,
    and the transport gunicorn accepted it on (unix: the socket twelve's ingress uses)."""
    req = flask.request
    family = getattr(req.environ.get("gunicorn.socket"), "family", None)
    transport = {socket.AF_UNIX: "unix", socket.AF_INET: "tcp", socket.AF_INET6: "tcp"}
    return flask.jsonify(
        remote_addr=req.remote_addr,
        scheme=req.scheme,
        host=req.host,
        forwarded_for=req.headers.get("X-Forwarded-For"),
        transport=transport.get(family),
    )


@app.route("/health")
def health():
    return flask.Response("ok\n", mimetype="text/plain")


# Probes of external services, used by twelve's tests against real servers. Each imports
# what it needs inside the handler, so the app starts without them.


@app.route("/s3")
def s3():
    """Puts probe.txt with ?body= into S3_BUCKET (created if missing) and reads it back."""
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel

    region = os.environ.get("S3_REGION") or "us-east-1"
    style = os.environ.get("S3_ADDRESSING_STYLE") or "auto"
    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT") or None,
        aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        region_name=region,
        config=Config(s3={"addressing_style": style}),
    )
    bucket = os.environ["S3_BUCKET"]
    names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    if bucket not in names:
        if region == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": region},
            )
    body = flask.request.args.get("body", "")
    client.put_object(Bucket=bucket, Key="probe.txt", Body=body.encode())
    got = client.get_object(Bucket=bucket, Key="probe.txt")["Body"].read()
    return flask.Response(got, mimetype="text/plain")


@app.route("/mail")
def mail():
    """Sends one mail with the subject ?subject= through SMTP_HOST:SMTP_PORT."""
    import smtplib  # pylint: disable=import-outside-toplevel
    from email.message import EmailMessage  # pylint: disable=import-outside-toplevel

    subject = flask.request.args.get("subject", "twelve")
    domain = os.environ.get("SMTP_DOMAIN") or "localhost"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = f"flask-example@{domain}"
    msg["To"] = f"probe@{domain}"
    msg.set_content(f"{subject}\n")
    host = os.environ["SMTP_HOST"]
    port = int(os.environ.get("SMTP_PORT", "25"))
    security = os.environ.get("SMTP_TRANSPORT_SECURITY", "none")
    smtp_class = smtplib.SMTP_SSL if security == "tls" else smtplib.SMTP
    with smtp_class(host, port, timeout=10) as smtp:
        smtp.ehlo()
        if security == "starttls":
            smtp.starttls()
            smtp.ehlo()
        user = os.environ.get("SMTP_USER")
        password = os.environ.get("SMTP_PASSWORD")
        if user and password and smtp.has_extn("auth"):
            smtp.login(user, password)
        smtp.send_message(msg)
    return flask.Response(f"sent {subject}\n", mimetype="text/plain")


@app.route("/queue")
def queue():
    """Publishes ?body= to the queue `probe` of the app's RabbitMQ vhost, reads it back."""
    import pika  # pylint: disable=import-outside-toplevel

    params = pika.URLParameters(os.environ["RABBITMQ_CONNECT_STRING"])
    params.socket_timeout = 10
    body = flask.request.args.get("body", "")
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        channel.queue_declare(queue="probe")
        channel.basic_publish(exchange="", routing_key="probe", body=body.encode())
        _, _, got = channel.basic_get(queue="probe", auto_ack=True)
    return flask.Response(got or b"", mimetype="text/plain")


@app.route("/trace")
def trace():
    """Exports one span, child of the incoming traceparent, as OTLP/HTTP JSON."""
    import json  # pylint: disable=import-outside-toplevel
    import secrets  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel
    import urllib.request  # pylint: disable=import-outside-toplevel

    start = time.time_ns()
    parts = flask.request.headers.get("traceparent", "").strip().split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        trace_id, parent_id = parts[1].lower(), parts[2].lower()
    else:
        trace_id, parent_id = secrets.token_hex(16), ""
    span = {
        "traceId": trace_id,
        "spanId": secrets.token_hex(8),
        "name": "GET /trace",
        "kind": 2,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(time.time_ns()),
    }
    if parent_id:
        span["parentSpanId"] = parent_id
    payload = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {
                            "key": "service.name",
                            "value": {
                                "stringValue": os.environ.get(
                                    "OTEL_SERVICE_NAME", "flask-example"
                                )
                            },
                        }
                    ]
                },
                "scopeSpans": [{"scope": {"name": "flask-example"}, "spans": [span]}],
            }
        ]
    }
    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    req = urllib.request.Request(
        endpoint,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
    return flask.Response(trace_id, mimetype="text/plain")
