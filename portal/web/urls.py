"""Every page of the browser UI: URL -> view. The ARM API's routes are in portal/arm/routes.py.

Two namespaces, as the templates name them: `vms:` (the inventory's pages) and `patching:` (the
Hotpatch blade, operations, the calendar).
"""

from django.urls import include, path

from .views import (
    api_tokens,
    azure_cli,
    fleet,
    fleet_import,
    history,
    hotpatch,
    maintenance,
    overview,
    preferences,
    sandbox,
    subscriptions,
    vm,
    what_if,
)

vm_pages = [
    path("vms/", fleet.fleet, name="list"),
    path("vms/export.csv", fleet.fleet_export, name="export"),
    path("vms/new/", vm.create, name="create"),
    path("vms/<int:pk>/", vm.overview, name="overview"),
    path("vms/<int:pk>/guest-updates/", vm.guest_updates, name="guest-updates"),
    path("vms/<int:pk>/delete/", vm.delete, name="delete"),
    path("subscriptions/", subscriptions.subscriptions, name="subscriptions"),
    path(
        "subscriptions/<uuid:subscription_id>/preview-features/",
        subscriptions.preview_features,
        name="preview-features",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/preview-features/<str:name>/<str:action>/",
        subscriptions.feature_action,
        name="feature-action",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/providers/Microsoft.Compute/<str:action>/",
        subscriptions.provider_action,
        name="provider-action",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/service-principals/",
        azure_cli.service_principals,
        name="service-principals",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/service-principals/<int:pk>/remove/",
        azure_cli.remove_service_principal,
        name="service-principal-remove",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/service-principals/<int:pk>/revoke/",
        azure_cli.revoke_service_principal,
        name="service-principal-revoke",
    ),
    path("azure-cli/", azure_cli.azure_cli, name="azure-cli"),
    path("azure-cli/hotpatch-portal-cert.pem", azure_cli.certificate, name="azure-cli-cert"),
    path("preferences/", preferences.preferences, name="preferences"),
]

patching_pages = [
    path("vms/<int:pk>/hotpatch/", hotpatch.hotpatch, name="hotpatch"),
    path("vms/<int:pk>/hotpatch/assess/", hotpatch.assess, name="assess"),
    path("vms/<int:pk>/hotpatch/install/", hotpatch.install, name="install"),
    path("operations/<int:pk>/status/", hotpatch.operation_status, name="operation-status"),
    path("calendar/", hotpatch.hotpatch_calendar, name="calendar"),
    path("overview/", overview.overview, name="fleet-overview"),
    path("updates/", overview.updates, name="updates"),
    path("updates/<int:pk>/", overview.update_machines, name="update-machines"),
    path("updates/<int:pk>/install/", overview.install_update, name="update-install"),
    path("history/", history.history, name="history"),
    path("history/export.csv", history.history_export, {"fmt": "csv"}, name="history-export-csv"),
    path("history/export.json", history.history_export, {"fmt": "json"}, name="history-export-json"),
]

sandbox_pages = [
    path("sandbox/", sandbox.sandbox_page, name="sandbox"),
    path("sandbox/clock/advance/", sandbox.advance, name="sandbox-advance"),
    path("sandbox/clock/realtime/", sandbox.realtime, name="sandbox-realtime"),
    path("sandbox/faults/", sandbox.add_fault, name="sandbox-fault-add"),
    path("sandbox/faults/<int:pk>/remove/", sandbox.remove_fault, name="sandbox-fault-remove"),
    path("sandbox/snapshot.json", sandbox.export_snapshot, name="sandbox-export"),
    path("sandbox/snapshot/load/", sandbox.import_snapshot, name="sandbox-load"),
    path("sandbox/reset/", sandbox.reset, name="sandbox-reset"),
]

maintenance_pages = [
    path("maintenance/", maintenance.configuration_list, name="list"),
    path("maintenance/new/", maintenance.configuration_form, name="create"),
    path("maintenance/preview/", maintenance.preview, name="preview"),
    path("maintenance/<int:pk>/", maintenance.configuration_detail, name="detail"),
    path("maintenance/<int:pk>/edit/", maintenance.configuration_form, name="edit"),
    path("maintenance/<int:pk>/delete/", maintenance.delete, name="delete"),
    path("maintenance/<int:pk>/cancel/", maintenance.cancel, name="cancel"),
    path(
        "maintenance/<int:pk>/assignments/<int:assignment>/remove/",
        maintenance.remove_assignment,
        name="remove-assignment",
    ),
    path("maintenance/<int:pk>/webhooks/<int:webhook>/remove/", maintenance.remove_webhook, name="remove-webhook"),
    path("maintenance/runs/<int:pk>/", maintenance.run_detail, name="run"),
    path("vms/<int:pk>/maintenance/", maintenance.vm_assignment, name="vm-assignment"),
]

urlpatterns = [
    path("", include((maintenance_pages, "maintenance"))),
    path("", include((vm_pages, "vms"))),
    path("", include((patching_pages, "patching"))),
    path("", include(sandbox_pages)),
    path("account/api-tokens/", api_tokens.api_tokens, name="api-tokens"),
    path("account/api-tokens/<int:pk>/revoke/", api_tokens.revoke_api_token, name="api-token-revoke"),
    # The sandbox: your own fleet imported, a what-if year over it.
    path("sandbox/import/", fleet_import.upload, name="sandbox-import"),
    path("sandbox/import/<int:pk>/", fleet_import.preview, name="sandbox-import-preview"),
    path("sandbox/import/<int:pk>/confirm/", fleet_import.confirm, name="sandbox-import-confirm"),
    path("sandbox/what-if/", what_if.what_if_page, name="sandbox-what-if"),
    path("sandbox/what-if/start/", what_if.start, name="sandbox-what-if-start"),
    path("sandbox/what-if/<int:pk>/", what_if.run_page, name="sandbox-what-if-run"),
    path("sandbox/what-if/<int:pk>/what-if.<str:fmt>", what_if.download, name="sandbox-what-if-download"),
]
