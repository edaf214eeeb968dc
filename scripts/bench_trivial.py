"""The ceiling of `make bench`: a Flask app whose one endpoint answers a small JSON at once.

Served by gunicorn with the same flags as Kasparro's API, it shows what Flask and gunicorn
themselves cost on this machine, so that every read figure stands next to it.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    """Answer a small JSON object, with no work behind it."""
    return {"status": "ok"}
