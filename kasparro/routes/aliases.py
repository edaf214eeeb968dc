"""What did not resolve, and the aliases an operator adds to resolve it."""

from flask_smorest import Blueprint

blp = Blueprint("aliases", __name__, description="What did not resolve, and aliases")
