"""Views of django-example."""

import os

from django.http import HttpResponse, JsonResponse

from .models import Visit


def index(request):
    greeting = os.environ.get("DJANGO_GREETING", "hello")
    return HttpResponse(f"{greeting} from django-example\n", content_type="text/plain")


def env(request):
    """The whole process environment, so tests can see what the app sees."""
    return JsonResponse(dict(os.environ))


def health(request):
    return HttpResponse("ok\n", content_type="text/plain")


def visits(request):
    """Record a visit and return the count (needs the migration to have run)."""
    Visit.objects.create(user_agent=request.headers.get("User-Agent", "")[:512])
    return JsonResponse({"visits": Visit.objects.count()})
