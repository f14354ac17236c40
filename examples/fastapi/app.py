"""fastapi-example: the FastAPI example application of twelve."""

import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def index():
    greeting = os.environ.get("APP_GREETING", "hello")
    return f"{greeting} from fastapi-example\n"


@app.get("/env")
async def env():
    """The whole process environment, so tests can see what the app sees."""
    return JSONResponse(dict(os.environ))


@app.get("/health", response_class=PlainTextResponse)
async def health():
    return "ok\n"
