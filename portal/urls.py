from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("", include("portal.arm.urls")),  # the ARM API under /arm/, its OpenAPI, the Azure CLI's sign-in
    path("", include("portal.web.urls")),  # the browser UI
    path("", RedirectView.as_view(pattern_name="vms:list", permanent=False), name="home"),
]
