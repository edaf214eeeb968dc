"""The read side: what the API answers, as plain functions over a SQLAlchemy session.

Each module answers one kind of question; routes only serialise what these return.
"""
