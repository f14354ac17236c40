"""flask-example: the Flask example application of twelve."""

import os

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


@app.route("/health")
def health():
    return flask.Response("ok\n", mimetype="text/plain")
