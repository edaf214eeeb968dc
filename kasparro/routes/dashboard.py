"""The dashboard page."""

from flask_smorest import Blueprint

blp = Blueprint("dashboard", __name__, description="The dashboard page")
