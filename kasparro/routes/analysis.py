"""Run comparison and anomaly flags."""

from flask_smorest import Blueprint

blp = Blueprint("analysis", __name__, description="Run comparison and anomaly flags")
