"""Assets: latest values, consensus, history and corrections."""

from flask_smorest import Blueprint

blp = Blueprint(
    "assets", __name__, description="Assets: latest values, consensus, history and corrections"
)
