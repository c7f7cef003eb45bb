from django.urls import path

from . import cli_views, views

app_name = "vms"

urlpatterns = [
    path("vms/", views.fleet, name="list"),
    path("vms/export.csv", views.fleet_export, name="export"),
    path("vms/new/", views.create, name="create"),
    path("vms/<int:pk>/", views.overview, name="overview"),
    path("vms/<int:pk>/guest-updates/", views.guest_updates, name="guest-updates"),
    path("vms/<int:pk>/delete/", views.delete, name="delete"),
    path("subscriptions/", views.subscriptions, name="subscriptions"),
    path("subscriptions/<uuid:subscription_id>/preview-features/", views.preview_features, name="preview-features"),
    path(
        "subscriptions/<uuid:subscription_id>/preview-features/<str:name>/<str:action>/",
        views.feature_action,
        name="feature-action",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/providers/Microsoft.Compute/<str:action>/",
        views.provider_action,
        name="provider-action",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/service-principals/",
        cli_views.service_principals,
        name="service-principals",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/service-principals/<int:pk>/remove/",
        cli_views.remove_service_principal,
        name="service-principal-remove",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/service-principals/<int:pk>/revoke/",
        cli_views.revoke_service_principal,
        name="service-principal-revoke",
    ),
    path("azure-cli/", cli_views.azure_cli, name="azure-cli"),
    path("azure-cli/hotpatch-portal-cert.pem", cli_views.certificate, name="azure-cli-cert"),
    path("preferences/", views.preferences, name="preferences"),
]
