import os

from django.core.wsgi import get_wsgi_application

from portal import var

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
var.prepare()
application = get_wsgi_application()
