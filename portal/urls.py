from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("portal.api_urls")),  # the ARM API under /arm/, its OpenAPI, API tokens
    # Until the portal's own pages exist, the admin is the way in.
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]
