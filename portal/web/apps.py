from django.apps import AppConfig


class WebConfig(AppConfig):
    """The browser UI: an app so that Django finds its template tags (`{% load portal %}`)."""

    name = "portal.web"
    label = "web"
