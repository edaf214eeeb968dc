"""Marshmallow schemas for every request's arguments and every response body.

One module per resource, each owning its limits (page sizes, cursor and text lengths);
``common`` holds what they share.
"""
