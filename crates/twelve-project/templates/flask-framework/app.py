"""{{name}}: a hello-world Flask application."""

import flask

app = flask.Flask(__name__)
# Options and built-ins arrive as FLASK_* environment variables
# (FLASK_SECRET_KEY, FLASK_BASE_URL, ...); expose them in app.config.
app.config.from_prefixed_env()


@app.route("/")
def index():
    return "Hello, world!\n"


if __name__ == "__main__":
    app.run()
