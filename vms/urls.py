from django.urls import path

from . import views

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
    path("preferences/", views.preferences, name="preferences"),
]
