from django.urls import path

from . import views

app_name = "patching"

urlpatterns = [
    path("vms/<int:pk>/hotpatch/", views.hotpatch, name="hotpatch"),
    path("vms/<int:pk>/hotpatch/assess/", views.assess, name="assess"),
    path("vms/<int:pk>/hotpatch/install/", views.install, name="install"),
    path("operations/<int:pk>/status/", views.operation_status, name="operation-status"),
    path("calendar/", views.hotpatch_calendar, name="calendar"),
]
